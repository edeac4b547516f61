"""New work wakes one delivery slot of its destination, not all of them.

Every slot woken runs a claim on the store; with all slots of a destination woken for each
webhook, the idle ones only claim nothing (and then ask for the next due time), which under
load was most of the store's traffic.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
SLOTS = 8
MESSAGES = 10


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        # Polling far away: every claim in the test comes from a wake-up.
        "workers": {"poll_interval": 60.0, "concurrency": SLOTS},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
            }
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "t"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


async def test_a_message_wakes_one_slot_not_all(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        store = h.gateway.store
        claims: Counter[str] = Counter()
        claim = store.claim

        async def counting_claim(destination: str, *args: Any) -> Any:
            claims[destination] += 1
            return await claim(destination, *args)

        store.claim = counting_claim  # type: ignore[method-assign]
        for n in range(MESSAGES + 1):
            if n == 1:
                # Counted from the second message on: the first one's claims include the
                # poller's first look at the store.
                claims.clear()
            message = {"id": f"m{n}", "chat": f"c{n}", "from": f"c{n}", "text": f"hello {n}"}
            response = await h.client.post(
                "/webhooks/wa", json={"messages": [message]}, headers=CHANNEL_AUTH
            )
            assert response.status_code == 200
            await crm.wait_count(n + 1)
    assert crm.texts() == [f"hello {n}" for n in range(MESSAGES + 1)]
    # Per message: the claim that took it and, at most, the woken slot's next (empty) one;
    # Waking every slot would have cost SLOTS claims per message (40 here).
    # A claim that fills its batch (here, 1 job) also rouses one more slot, which may find
    # nothing: at most three claims per message.
    assert claims["crm"] <= 3 * MESSAGES + SLOTS


async def test_one_webhook_with_many_conversations_fans_out_to_every_slot(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    gate = crm.hold(lambda item: True)
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        deliverer = h.gateway.deliverer
        assert deliverer is not None
        async with asyncio.timeout(10):  # every slot done with its start-up claim, asleep
            while deliverer.idle_slots("crm") < SLOTS:  # noqa: ASYNC110
                await asyncio.sleep(0)  # a yield, not a timed wait
        messages = [
            {"id": f"m{n}", "chat": f"c{n}", "from": f"c{n}", "text": f"hello {n}"}
            for n in range(SLOTS)
        ]
        response = await h.client.post(
            "/webhooks/wa", json={"messages": messages}, headers=CHANNEL_AUTH
        )
        assert response.json()["accepted"] == SLOTS
        # The CRM takes one message per call: every slot must be sending at once.
        await crm.wait_for(lambda r: r.held == SLOTS)
        gate.set()
        await crm.wait_count(SLOTS)


async def test_a_message_that_came_while_its_conversation_was_out_goes_right_after(
    tmp_path: Path,
) -> None:
    """A customer's second message, committed while the first is out with one slot: the
    lane is leased, so the slot its wake rouses claims nothing, and the poller then sleeps
    until the lease would run out. The message goes as soon as the first is recorded, not
    at the poller's next look (`poll_interval`, 60 s here)."""
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    gate = crm.hold(lambda item: item["text"] == "hello 0")
    config = settings(tmp_path)
    config["workers"]["concurrency"] = 2
    config["crms"]["crm"]["max_batch"] = 10  # a batch of one is not full: no claim for that
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(config, apps=apps) as h:
        store = h.gateway.store
        next_due = store.next_due
        poller_asleep = asyncio.Event()

        async def watched_next_due(destination: str, now: float) -> float | None:
            due = await next_due(destination, now)
            if due is not None and due > now + 30:  # the lease's end: nothing due before
                poller_asleep.set()
            return due

        async def post(n: int) -> None:
            message = {"id": f"m{n}", "chat": "c0", "from": "c0", "text": f"hello {n}"}
            response = await h.client.post(
                "/webhooks/wa", json={"messages": [message]}, headers=CHANNEL_AUTH
            )
            assert response.status_code == 200

        await post(0)
        await crm.wait_for(lambda r: r.held == 1)
        store.next_due = watched_next_due  # type: ignore[method-assign]
        await post(1)  # its wake rouses the idle slot, which finds the lane leased
        async with asyncio.timeout(10):
            await poller_asleep.wait()
        gate.set()
        await crm.wait_count(2)  # 10 s, far below the poll interval
    assert crm.texts() == ["hello 0", "hello 1"]
