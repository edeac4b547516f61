"""The durable pipeline end to end, in process: webhook -> store -> worker -> destination."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import Recorder, running_gateway
from gateway.testing.recorder import DROP

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
CRM_AUTH = {"Authorization": "Bearer crm-token"}


def make_settings(tmp_path: Path, **channel: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": "admin-secret"},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 4},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
                **channel,
            }
        },
        "crms": {
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "crm-token",
                "max_batch": 10,
            }
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def customer(msg_id: str, chat: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"id": msg_id, "chat": chat, "from": chat, "text": text, **extra}]}


@pytest.fixture
def recorders() -> tuple[Recorder, Recorder]:
    return Recorder(name="channel"), Recorder(name="crm")


def apps(channel: Recorder, crm: Recorder) -> dict[str, Any]:
    return {"channel.test": channel.app, "crm.test": crm.app}


async def test_customer_message_reaches_crm(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        response = await h.client.post(
            "/webhooks/wa", json=customer("m1", "c1", "hello"), headers=CHANNEL_AUTH
        )
        assert response.status_code == 200
        assert response.json() == {"ok": True, "accepted": 1, "duplicates": 0}
        await crm.wait_count(1)
    assert crm.texts() == ["hello"]
    assert crm.received[0].conversation == "c1"


async def test_duplicate_webhook_has_one_effect(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    crm.dedupe = False  # count every delivery, so a second effect would show
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        body = customer("m1", "c1", "once")
        first = await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        second = await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        assert first.json()["accepted"] == 1
        assert second.json() == {"ok": True, "accepted": 0, "duplicates": 1}
        await crm.wait_count(1)
        # A later message proves the worker went past the duplicate without sending it.
        await h.client.post("/webhooks/wa", json=customer("m2", "c1", "next"), headers=CHANNEL_AUTH)
        await crm.wait_count(2)
    assert crm.texts() == ["once", "next"]
    assert crm.duplicates == 0


async def test_order_per_conversation_with_parallel_conversations(
    tmp_path: Path, recorders: Any
) -> None:
    channel, crm = recorders
    crm.dedupe = False
    gate = crm.hold(lambda item: item["text"] == "a1")
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        for msg_id, chat in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("a3", "a")]:
            await h.client.post(
                "/webhooks/wa", json=customer(msg_id, chat, msg_id), headers=CHANNEL_AUTH
            )
        # Conversation b proceeds while a's first message is stuck at the destination.
        await crm.wait_for(lambda r: r.texts("b") == ["b1", "b2"])
        assert crm.texts("a") == []
        gate.set()
        await crm.wait_for(lambda r: len(r.texts("a")) == 3)
    assert crm.texts("a") == ["a1", "a2", "a3"]
    assert crm.duplicates == 0


async def test_operator_reply_is_sent_and_acknowledged(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        reply = {"messages": [{"id": "op-1", "chat": "c1", "from": "anna", "text": "hi there"}]}
        response = await h.client.post("/webhooks/crm", json=reply, headers=CRM_AUTH)
        assert response.status_code == 200
        await channel.wait_count(1)
        await crm.wait_for(lambda r: len(r.acks) == 1)
    assert channel.texts() == ["hi there"]
    ack = crm.acks[0]
    assert ack["message_id"] == "op-1"
    assert ack["delivered_id"] == channel.received[0].native_id
    assert ack["error"] is None


async def test_statuses_flow_back_monotonically(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        reply = {"messages": [{"id": "op-1", "chat": "c1", "text": "hi"}]}
        await h.client.post("/webhooks/crm", json=reply, headers=CRM_AUTH)
        await channel.wait_count(1)
        sent_id = channel.received[0].native_id
        for status in ("read", "delivered", "read"):
            body = {"statuses": [{"id": sent_id, "status": status, "chat": "c1"}]}
            await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        body = {"statuses": [{"id": sent_id, "status": "sent", "chat": "c1"}]}
        await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        await crm.wait_for(lambda r: len(r.statuses) >= 1)
        # Another conversation's message proves the later, lower statuses were processed.
        await h.client.post(
            "/webhooks/crm",
            json={"messages": [{"id": "op-2", "chat": "c1", "text": "x"}]},
            headers=CRM_AUTH,
        )
        await crm.wait_for(lambda r: len(r.acks) == 2)
    assert [s["status"] for s in crm.statuses] == ["read"]
    assert crm.statuses[0]["message_id"] == "op-1"


async def test_temporary_failures_are_retried(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    crm.fail_next(2, status=503)
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        await h.client.post("/webhooks/wa", json=customer("m1", "c1", "late"), headers=CHANNEL_AUTH)
        await crm.wait_count(1)
        metrics = (await h.client.get("/metrics")).text
    assert crm.texts() == ["late"]
    assert [c for c in crm.calls if c[0] == "send"] == [("send", 503), ("send", 503), ("send", 200)]
    assert 'gateway_jobs_retried_total{destination="crm",kind="send"} 2' in metrics


async def test_permanent_failure_is_dead_lettered_and_shown_to_the_source(
    tmp_path: Path, recorders: Any
) -> None:
    channel, crm = recorders
    admin = {"Authorization": "Bearer admin-secret"}
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        reply = {"messages": [{"id": "op-1", "chat": "reject-1", "text": "no"}]}
        await h.client.post("/webhooks/crm", json=reply, headers=CRM_AUTH)
        await crm.wait_for(lambda r: len(r.acks) == 1)
        dead = (await h.client.get("/admin/dead-letters", headers=admin)).json()
    assert crm.acks[0]["error"] == {"code": "rejected", "text": "recipient refuses"}
    items = dead if isinstance(dead, list) else dead["dead_letters"]
    assert len(items) == 1
    assert "recipient refuses" in items[0]["last_error"]


async def test_exhausted_retries_park_and_replay_delivers(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    crm.fail_next(4, status=502)
    admin = {"Authorization": "Bearer admin-secret"}
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        await h.client.post(
            "/webhooks/wa", json=customer("m1", "c1", "parked"), headers=CHANNEL_AUTH
        )
        await h.observer.wait_for("dead_lettered")
        body = (await h.client.get("/admin/dead-letters", headers=admin)).json()
        dead = body if isinstance(body, list) else body["dead_letters"]
        assert "gave up after 4 attempts" in dead[0]["last_error"]
        # Meanwhile the lane is free again: the next message of the conversation proceeds.
        await h.client.post(
            "/webhooks/wa", json=customer("m2", "c1", "after"), headers=CHANNEL_AUTH
        )
        await crm.wait_count(1)
        replay = await h.client.post(f"/admin/dead-letters/{dead[0]['id']}/replay", headers=admin)
        assert replay.status_code == 200
        await crm.wait_count(2)
    assert crm.texts() == ["after", "parked"]


async def test_ambiguous_failure_is_not_resent_to_a_destination_that_cannot_dedupe(
    tmp_path: Path, recorders: Any
) -> None:
    channel, crm = recorders
    channel.fail_next(1, status=DROP)
    settings = make_settings(tmp_path, idempotent=False)
    async with running_gateway(settings, apps=apps(channel, crm)) as h:
        reply = {"messages": [{"id": "op-1", "chat": "c1", "text": "maybe"}]}
        await h.client.post("/webhooks/crm", json=reply, headers=CRM_AUTH)
        await crm.wait_for(lambda r: len(r.acks) == 1)
    assert crm.acks[0]["error"]["code"] is None
    assert channel.calls == [("send", DROP)]  # parked, never resent blindly


async def test_edits_deletes_and_quotes_are_translated(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        await h.client.post(
            "/webhooks/wa", json=customer("m1", "c1", "first"), headers=CHANNEL_AUTH
        )
        body = {
            "messages": [{"id": "m2", "chat": "c1", "text": "re", "quote": "m1"}],
            "edits": [{"id": "m1", "chat": "c1", "text": "first!"}],
            "deletes": [{"id": "m1", "chat": "c1"}],
        }
        await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        await crm.wait_count(4)
    first_id = crm.received[0].native_id
    kinds = [(r.kind, r.item.get("target"), r.item.get("quote")) for r in crm.received]
    assert kinds[0] == ("message", None, None)
    assert ("message", None, first_id) in kinds
    reply = next(r for r in crm.received if r.item.get("quote") == first_id)
    assert reply.item["quoted_text"] == "first"  # the id map keeps the start of the text
    assert ("edit", first_id, None) in kinds
    assert ("delete", first_id, None) in kinds


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{not json", CHANNEL_AUTH, 400, "not JSON"),
        (b'{"messages": [{"chat": "c1"}]}', CHANNEL_AUTH, 422, "messages[0].id"),
        (b'{"messages": "x"}', CHANNEL_AUTH, 422, "messages must be a list"),
        (b'{"messages": []}', {"Authorization": "Bearer wrong"}, 401, "token"),
        (b'{"messages": []}', {}, 401, "token"),
    ],
)
async def test_bad_webhooks_get_a_json_4xx_and_store_nothing(
    tmp_path: Path, recorders: Any, body: bytes, headers: dict[str, str], status: int, words: str
) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        response = await h.client.post("/webhooks/wa", content=body, headers=headers)
        assert response.status_code == status
        assert words in response.json()["error"]["message"]
        stats = await h.gateway.store.stats(h.gateway.clock())
        metrics = (await h.client.get("/metrics")).text
    assert all(s.ready == 0 for s in stats)
    assert "gateway_webhooks_rejected_total" in metrics


async def test_unknown_instance_and_oversized_body(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    settings = make_settings(tmp_path)
    settings["max_body_bytes"] = 1024
    async with running_gateway(settings, apps=apps(channel, crm)) as h:
        missing = await h.client.post("/webhooks/nope", json={})
        big = await h.client.post("/webhooks/wa", content=b"x" * 2048, headers=CHANNEL_AUTH)
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]["message"]
    assert big.status_code == 413
    assert "1024" in big.json()["error"]["message"]


async def test_a_batch_stops_before_a_reference_to_a_message_in_it(
    tmp_path: Path, recorders: Any
) -> None:
    channel, crm = recorders
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        deliverer = h.gateway.deliverer
        assert deliverer is not None
        await deliverer.stop()  # drive delivery by hand, so all jobs sit in one claim
        body = {
            "messages": [
                {"id": "m1", "chat": "c1", "text": "one"},
                {"id": "m2", "chat": "c1", "text": "two", "quote": "m1"},
            ],
            "edits": [{"id": "m1", "chat": "c1", "text": "one!"}],
        }
        await h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        store, now = h.gateway.store, h.gateway.clock()
        while len(crm.received) < 3:
            jobs = await store.claim("crm", "by-hand", 10, 60.0, now)
            assert jobs
            await deliverer.process("crm", jobs, "by-hand")
    one = crm.received[0].native_id
    assert [(r.text, r.item.get("quote"), r.item.get("target")) for r in crm.received] == [
        ("one", None, None),
        ("two", one, None),
        ("one!", None, one),
    ]


async def test_throttling_waits_without_using_up_attempts(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    crm.fail_next(6, status=429)  # more than max_attempts (4): waiting is not failing
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        await h.client.post("/webhooks/wa", json=customer("m1", "c1", "slow"), headers=CHANNEL_AUTH)
        await crm.wait_count(1)
    assert crm.texts() == ["slow"]
    assert not h.observer.of_type("dead_lettered")


async def test_a_call_longer_than_the_lease_keeps_its_lane(tmp_path: Path, recorders: Any) -> None:
    channel, crm = recorders
    crm.dedupe = False  # a second sender of the same message would show as a duplicate
    gate = crm.hold(lambda item: item["text"] == "slow")
    settings = make_settings(tmp_path)
    settings["workers"] = {"poll_interval": 0.05, "concurrency": 4, "lease_seconds": 0.3}
    async with running_gateway(settings, apps=apps(channel, crm)) as h:
        await h.client.post("/webhooks/wa", json=customer("m1", "c1", "slow"), headers=CHANNEL_AUTH)
        await asyncio.wait_for(crm.holding.wait(), 10)
        # Held for several lease periods: the other slots keep polling the lane meanwhile.
        for _ in range(8):
            await h.observer.wait_next(0.3)
        gate.set()
        await crm.wait_count(1)
        await h.client.post("/webhooks/wa", json=customer("m2", "c1", "next"), headers=CHANNEL_AUTH)
        await crm.wait_count(2)
    assert crm.texts() == ["slow", "next"]
    assert crm.duplicates == 0


async def test_emit_answers_each_event_in_order(tmp_path: Path, recorders: Any) -> None:
    from gateway.models import AccountState, AccountStatus, InboundEvent, Message, Sender

    channel, crm = recorders
    message = Message(conversation_id="c1", native_id="m1", sender=Sender(id="c1"), text="hi")
    events = [
        InboundEvent("msg:m1", message),
        InboundEvent("state", AccountState(AccountStatus.NEEDS_QR)),
        InboundEvent("msg:m1", message),
    ]
    async with running_gateway(make_settings(tmp_path), apps=apps(channel, crm)) as h:
        assert await h.gateway.emit("wa", events) == [True, True, False]
        await crm.wait_count(1)
        state = await h.gateway.account_state("wa")
    assert state.status is AccountStatus.NEEDS_QR
