"""Chat API end to end over real HTTP: the fake posts webhooks to the gateway on a loopback
port, the gateway calls the fake and the test CRM, and a restart refills a missed webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_chatapi.provider import ChatApiChannel
from gateway_fakes.chatapi import FakeChatApi, Magic, magic_phone

from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.fake_common import ManualClock

pytestmark = pytest.mark.anyio

PUBLIC_URL = "http://gateway.test"
SECRET = "e2e-webhook-secret-4f9a1c"
CHAT = "79001234567@c.us"
CRM_AUTH = {"Authorization": "Bearer crm-token"}


def make_settings(tmp_path: Path, fake: FakeChatApi) -> dict[str, Any]:
    return {
        "public_url": PUBLIC_URL,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 2},
        "channels": {
            "wa": {
                "provider": "chatapi",
                "base_url": fake.base_url,
                "token": fake.token,
                "webhook_secret": SECRET,
                "mirror_phone_messages": True,
                "messages_per_second": 50,
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


async def started(h: GatewayHarness, fake: FakeChatApi) -> None:
    """Wait for the instance's start-up work, and aim the fake at the real listening port.

    `start()` set the webhook to `{public_url}/webhooks/wa/{secret}` before the harness
    served the app on a random port, so only scheme, host and port are swapped here.
    """
    provider = h.gateway.instances["wa"]
    assert isinstance(provider, ChatApiChannel)
    if provider.startup_task is not None:
        await provider.startup_task
    assert fake.settings.webhookUrl == f"{PUBLIC_URL}/webhooks/wa/{SECRET}"
    assert h.url is not None
    fake.settings.webhookUrl = fake.settings.webhookUrl.replace(PUBLIC_URL, h.url)


def message_events(h: GatewayHarness, kind: str) -> list[str | None]:
    return [o.message_id for o in h.observer.of_type(kind) if o.detail.get("kind") == "message"]


async def test_chatapi_round_trip_over_real_http(tmp_path: Path) -> None:
    crm = Recorder(name="crm")
    async with httpx.AsyncClient() as http:
        fake = FakeChatApi(http=http)
        settings = make_settings(tmp_path, fake)
        apps = {"api.chat-api.test": fake.app, "crm.test": crm.app}

        async with running_gateway(settings, apps=apps, serve_http=True) as h:
            await started(h, fake)

            # The customer writes: a text, a photo with a caption, a reply quoting the text.
            first = fake.customer_writes(CHAT, "Hello, is the shop open?", sender_name="Ivan")
            photo = fake.customer_writes(CHAT, kind="image", caption="this model")
            reply = fake.customer_writes(CHAT, "in red?", quoted=first)
            report = await fake.deliver_webhooks()
            assert [a.status for a in report.attempts] == [200]  # one POST, three items
            await crm.wait_count(3)
            assert crm.texts() == ["Hello, is the shop open?", "this model", "in red?"]
            hello, picture, quote = crm.received
            assert hello.item["sender"] == "Ivan"
            (attachment,) = picture.item["attachments"]
            assert attachment["kind"] == "image"
            assert attachment["url"] == fake.find(photo).item["body"]  # type: ignore[union-attr]
            assert quote.item["quote"] == hello.native_id

            # Chat API resends the batch (guaranteedHooks): answered 200, no second effect.
            fake.redeliver(reply)
            report = await fake.deliver_webhooks()
            assert [a.status for a in report.attempts] == [200]
            assert len(message_events(h, "duplicate")) == 3

            # Someone who does not know the URL secret cannot inject messages.
            forged = dict(report.attempts[0].body)
            forged["messages"] = [
                {**forged["messages"][0], "id": "false_forged", "body": "pay here"}
            ]
            response = await h.client.post("/webhooks/wa/guessed-secret-123456789", json=forged)
            assert response.status_code == 403
            response = await h.client.post("/webhooks/wa", json=forged)
            assert response.status_code == 401

            # The operator answers in the CRM, quoting the customer's first message.
            answer = {"id": "op-1", "chat": CHAT, "from": "anna", "text": "Yes, until 9"}
            response = await h.client.post(
                "/webhooks/crm",
                json={"messages": [{**answer, "quote": hello.native_id}]},
                headers=CRM_AUTH,
            )
            assert response.status_code == 200
            await crm.wait_for(lambda r: len(r.acks) == 1)
            (sent,) = fake.sent
            assert (sent.method, sent.chat_id, sent.body) == ("sendMessage", CHAT, "Yes, until 9")
            assert sent.quoted_msg_id == first
            assert fake.reads == [CHAT]  # the operator answered: the chat is read
            assert crm.acks[0]["delivered_id"] == sent.id
            assert crm.acks[0]["error"] is None

            # The echo of that send comes back with the acks; only the statuses travel on.
            fake.mark_delivered(sent.id)
            fake.mark_read(sent.id)
            fake.phone_writes(CHAT, "Typed on the phone")
            report = await fake.deliver_webhooks()
            assert {a.status for a in report.attempts} == {200}
            await crm.wait_for(lambda r: any(s["status"] == "read" for s in r.statuses))
            await crm.wait_count(4)
            assert [s["status"] for s in crm.statuses] == ["sent", "delivered", "read"]
            assert {s["message_id"] for s in crm.statuses} == {"op-1"}
            assert sent.id not in message_events(h, "accepted")
            assert crm.texts()[3] == "Typed on the phone"
            assert crm.received[3].item["note"] is True
            assert crm.received[3].item["from_me"] is True

        # The gateway is down; a webhook without guaranteedHooks is lost for good.
        fake.settings.guaranteedHooks = False
        missed = fake.customer_writes(CHAT, "Anyone there?")
        report = await fake.deliver_webhooks()
        assert report.dropped == 1

        # Back up: the refill from /messages brings it; overlaps are mere duplicates.
        async with running_gateway(settings, apps=apps, serve_http=True) as h:
            await started(h, fake)
            await crm.wait_count(5)
            assert message_events(h, "accepted") == [missed]
            assert any(c.method == "messages" for c in fake.calls)

    assert crm.texts()[4] == "Anyone there?"
    assert crm.duplicates == 0
    assert len(fake.sent) == 1


async def test_an_operator_reply_whose_answer_was_lost_is_looked_for_not_parked(
    tmp_path: Path,
) -> None:
    """A crash or a timeout loses Chat API's answer to a send: once it has settled, the
    gateway finds the message in Chat API's history (recorded, not resent) or does not
    (sent again); none is parked for a person."""
    crm = Recorder(name="crm")
    clock = ManualClock()
    fake = FakeChatApi(clock=clock)
    apps = {"api.chat-api.test": fake.app, "crm.test": crm.app}
    lost = magic_phone(Magic.TIMEOUT_AFTER_EFFECT) + "@c.us"  # sent; the answer never comes
    async with running_gateway(make_settings(tmp_path, fake), apps=apps, clock=clock) as h:
        provider = h.gateway.instances["wa"]
        assert isinstance(provider, ChatApiChannel)
        if provider.startup_task is not None:
            await provider.startup_task
        fake.faults.fail_next("sendMessage", kind="timeout")  # times out before it took effect
        replies = [
            {"id": "op-2", "chat": CHAT, "from": "anna", "text": "never left"},
            {"id": "op-1", "chat": lost, "from": "anna", "text": "landed, answer lost"},
        ]
        for count, reply in enumerate(replies, 1):
            response = await h.client.post(
                "/webhooks/crm", json={"messages": [reply]}, headers=CRM_AUTH
            )
            assert response.status_code == 200
            # Its outcome is unknown: it waits until Chat API could still be acting on it.
            await h.observer.wait_for("retried", count)
        assert [s.body for s in fake.sent] == ["landed, answer lost"]
        clock.advance(provider.capabilities.settle_seconds + 1)
        assert h.gateway.deliverer is not None
        h.gateway.deliverer.wake()
        await crm.wait_for(lambda r: len(r.acks) == 2)
        dead = await h.gateway.store.dead_letters()
    reconciled = {o.message_id: o.detail["landed"] for o in h.observer.of_type("reconciled")}
    assert reconciled == {"op-1": True, "op-2": False}
    assert [s.body for s in fake.sent] == ["landed, answer lost", "never left"]  # one each
    by_message = {a["message_id"]: a["delivered_id"] for a in crm.acks}
    assert by_message == {"op-1": fake.sent[0].id, "op-2": fake.sent[1].id}
    assert dead == []
