"""No silent drop: a message no route carries is held, then delivered in order or parked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.providers import Route
from gateway.store.base import NO_ROUTE, ROUTE_GONE
from gateway.testing import Recorder, running_gateway
from tests.test_pipeline import CHANNEL_AUTH, apps, customer, make_settings

pytestmark = pytest.mark.anyio

LINK = Route(name="late", channel="wa", crm="crm")


def unlinked(tmp_path: Path) -> dict[str, Any]:
    settings = make_settings(tmp_path)
    settings["routes"] = {}
    return settings


async def post(h: Any, msg_id: str, chat: str = "c1") -> None:
    response = await h.client.post(
        "/webhooks/wa", json=customer(msg_id, chat, msg_id), headers=CHANNEL_AUTH
    )
    assert response.status_code == 200, response.text


async def test_messages_before_a_link_are_held_then_delivered_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with running_gateway(unlinked(tmp_path), apps=apps(channel, crm)) as h:
        with caplog.at_level(logging.WARNING, logger="gateway"):
            for n in range(1, 4):
                await post(h, f"m{n}")
        assert any("no route carries messages from wa" in r.getMessage() for r in caplog.records)
        held = await h.gateway.store.held()
        assert [m.dedupe_key.rsplit(":", 1)[-1] for m in held] == ["m1", "m2", "m3"]
        assert crm.received == []
        await h.gateway.add_route(LINK)
        await post(h, "m4")  # after the link: behind the held ones, never ahead of them
        await crm.wait_count(4)
        assert crm.texts() == ["m1", "m2", "m3", "m4"]
        assert await h.gateway.store.held() == []


async def test_messages_after_an_unlink_are_held_until_the_next_link(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with running_gateway(unlinked(tmp_path), apps=apps(channel, crm)) as h:
        await h.gateway.add_route(LINK)
        await post(h, "before")
        await crm.wait_count(1)
        await h.gateway.remove_route(LINK.name)
        await post(h, "after-1")
        await post(h, "after-2", chat="c2")
        assert len(await h.gateway.store.held()) == 2
        await h.gateway.add_route(LINK)
        await crm.wait_count(3)
        assert sorted(crm.texts()) == ["after-1", "after-2", "before"]


async def test_a_queued_message_whose_route_goes_is_held_in_its_place_not_parked(
    tmp_path: Path,
) -> None:
    now = [1_800_000_000.0]
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with running_gateway(
        unlinked(tmp_path), apps=apps(channel, crm), clock=lambda: now[0]
    ) as h:
        await h.gateway.add_route(LINK)
        crm.fail_next(1, 503)
        await post(h, "m1")
        await post(h, "m2")
        # m1 was refused once: it waits for its retry (the clock stands still), m2 behind it.
        await crm.wait_for(lambda r: ("send", 503) in r.calls)
        await h.observer.wait_for("retried")
        await h.gateway.remove_route(LINK.name)
        now[0] += 1
        await post(h, "m3")  # no route: held at once, after m1 and m2 arrived
        now[0] += 60
        assert h.gateway.deliverer is not None
        h.gateway.deliverer.wake()
        # The retry finds the route gone: m1 and m2 are held too, ahead of m3, not parked.
        await h.observer.wait_for("held", 3)
        held = await h.gateway.store.held()
        assert [(m.dedupe_key.rsplit(":", 1)[-1], m.reason) for m in held] == [
            ("m1", ROUTE_GONE),
            ("m2", ROUTE_GONE),
            ("m3", NO_ROUTE),
        ]
        assert await h.gateway.store.dead_letters() == []
        await h.gateway.add_route(LINK)
        await crm.wait_count(3)
        assert crm.texts() == ["m1", "m2", "m3"]
        assert await h.gateway.store.held() == []


async def test_held_too_long_becomes_a_dead_letter_that_can_be_held_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_800_000_000.0]
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    settings = unlinked(tmp_path)
    settings["store"]["hold_unrouted_days"] = 7
    async with running_gateway(settings, apps=apps(channel, crm), clock=lambda: now[0]) as h:
        await post(h, "m1")
        now[0] += 7 * 86400 + 1
        with caplog.at_level(logging.WARNING, logger="gateway"):
            expired = await h.gateway.unrouted.expire()
        assert [m.reason for m in expired] == [
            "no route carried it for 7 days (held since it arrived, then parked)"
        ]
        assert any(r.getMessage().startswith("dead_lettered") for r in caplog.records)
        assert await h.gateway.store.held() == []
        assert len(await h.gateway.store.held(dead=True)) == 1
        # A dead one is no longer delivered when a route appears...
        await h.gateway.add_route(LINK)
        await h.gateway.unrouted.release()
        assert crm.received == []
        # ...unless it is replayed.
        assert await h.gateway.store.replay_held(now=now[0]) == 1
        await crm.wait_count(1)
        assert crm.texts() == ["m1"]


ADMIN = {"Authorization": "Bearer admin-secret"}


async def test_held_messages_show_in_admin_metrics_and_status(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with running_gateway(unlinked(tmp_path), apps=apps(channel, crm)) as h:
        await post(h, "m1")
        await post(h, "m2", chat="c2")
        listing = (await h.client.get("/admin/unrouted", headers=ADMIN)).json()
        assert [c["held"] for c in listing["counts"]] == [2]
        assert [m["conversation"] for m in listing["messages"]] == ["c1", "c2"]
        metrics = (await h.client.get("/metrics")).text
        assert 'gateway_unrouted_messages{instance="wa",state="held"} 2' in metrics
        status = (await h.client.get("/admin/status", headers=ADMIN)).json()
        assert status["needs_attention"] is True
        assert status["unrouted"][0]["held"] == 2
        bad = await h.client.post("/admin/unrouted/replay", json={"ids": ["x"]}, headers=ADMIN)
        assert bad.status_code == 422 and "ids" in bad.text
        await h.gateway.add_route(LINK)
        await crm.wait_count(2)
        metrics = (await h.client.get("/metrics")).text
        assert 'gateway_unrouted_messages{instance="wa",state="held"} 0' in metrics


async def test_admin_replays_unrouted_dead_letters(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with running_gateway(
        unlinked(tmp_path), apps=apps(channel, crm), clock=lambda: now[0]
    ) as h:
        await post(h, "m1")
        now[0] += 8 * 86400
        await h.gateway.housekeep()
        dead = (await h.client.get("/admin/unrouted?dead=1", headers=ADMIN)).json()
        assert [m["reason"] for m in dead["messages"]] == [
            "no route carried it for 7 days (held since it arrived, then parked)"
        ]
        await h.gateway.add_route(LINK)
        replayed = await h.client.post("/admin/unrouted/replay", json={}, headers=ADMIN)
        assert replayed.json() == {"held_again": 1}
        await crm.wait_count(1)
