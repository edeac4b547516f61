"""GREEN-API channel end to end: the fake posts real HTTP webhooks to a served gateway.

The fake GREEN-API sends its notifications with a real `httpx.AsyncClient` to the gateway on
a loopback port; the gateway's own calls reach the fake (and the test CRM's recorder) through
the test kit's in-process network.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes.greenapi import FakeGreenApi, Magic, magic_phone
from gateway_greenapi.provider import GreenApiProvider

from gateway import Route
from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.fake_common import ManualClock

pytestmark = pytest.mark.anyio

TOKEN = "green-hook-token-0123456789"
CUSTOMER = "79001234567"
CHAT = f"{CUSTOMER}@c.us"
CRM_AUTH = {"Authorization": "Bearer crm-token"}


def make_settings(tmp_path: Path, **channel: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 2},
        "channels": {
            "wa": {
                "provider": "greenapi",
                "api_url": "https://api.green-api.test",
                "id_instance": "1101000001",
                "api_token": "fake0green0api0token",
                "webhook_token": TOKEN,
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


@pytest.fixture
def crm() -> Recorder:
    # Count every delivery: a second effect of a duplicate would show.
    return Recorder(name="crm", dedupe=False)


@pytest.fixture
async def to_gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def apps(fake: FakeGreenApi, crm: Recorder) -> dict[str, Any]:
    return {"api.green-api.test": fake.app, "crm.test": crm.app}


async def reply(h: GatewayHarness, msg_id: str, chat: str, text: str, **extra: Any) -> None:
    body = {"messages": [{"id": msg_id, "chat": chat, "from": "anna", "text": text, **extra}]}
    response = await h.client.post("/webhooks/crm", json=body, headers=CRM_AUTH)
    assert response.status_code == 200


async def delivered_to(h: GatewayHarness, instance: str, kind: str) -> None:
    """Wait, on observations, until a job of `kind` was delivered to `instance`."""

    def done() -> bool:
        return any(
            o.instance == instance and o.detail.get("kind") == kind
            for o in h.observer.of_type("delivered")
        )

    while not done():
        await h.observer.wait_for("delivered", len(h.observer.of_type("delivered")) + 1)


async def test_webhooks_sends_and_statuses(
    tmp_path: Path, crm: Recorder, to_gateway: httpx.AsyncClient
) -> None:
    fake = FakeGreenApi(http=to_gateway)  # a new instance: the plugin must switch it on
    async with running_gateway(make_settings(tmp_path), apps=apps(fake, crm), serve_http=True) as h:
        # The plugin pointed the instance at its public URL; this test serves it elsewhere.
        assert fake.settings.webhookUrl == "http://gateway.test/webhooks/wa"
        assert fake.settings.webhookUrlToken == TOKEN
        assert fake.settings.on("incomingWebhook") and fake.settings.on("outgoingWebhook")
        fake.settings.webhookUrl = f"{h.url}/webhooks/wa"

        # Inbound: text, media and a quoted reply reach the CRM.
        hello = fake.customer_writes(CUSTOMER, "Hello", sender_name="Ivan")
        fake.customer_writes(CUSTOMER, kind="image", caption="receipt")
        fake.customer_writes(CUSTOMER, "about this", quoted=hello)
        report = await fake.deliver_webhooks()
        assert report.failed == 0 and report.pending == 0
        await crm.wait_count(3)
        first, photo, quote = crm.received
        assert (first.conversation, first.text, first.item["sender"]) == (CHAT, "Hello", "Ivan")
        assert photo.text == "receipt"
        [attachment] = photo.item["attachments"]
        assert attachment["kind"] == "image"
        assert attachment["url"].startswith(f"{fake.media_url}/_fake/files/")
        assert (quote.text, quote.item["quote"]) == ("about this", first.native_id)

        # Outbound: the operator answers, quoting the customer's first message.
        await reply(h, "op-1", CHAT, "Hi Ivan", quote=first.native_id)
        await crm.wait_for(lambda r: len(r.acks) == 1)
        [sent] = fake.sent
        assert sent.params == {"chatId": CHAT, "message": "Hi Ivan", "quotedMessageId": hello}
        # The operator answered: the customer's messages are marked read (blue ticks).
        assert fake.reads == [(CHAT, None)]
        assert crm.acks[0]["delivered_id"] == sent.id_message
        assert crm.acks[0]["error"] is None

        # Statuses come back to the CRM, on the operator's message id.
        fake.mark_delivered(sent.id_message)
        fake.mark_read(sent.id_message)
        await fake.deliver_webhooks()
        await crm.wait_for(lambda r: any(s["status"] == "read" for s in r.statuses))
        assert [s["status"] for s in crm.statuses] == ["sent", "delivered", "read"]
        assert {s["message_id"] for s in crm.statuses} == {"op-1"}

        # A recipient without WhatsApp: the send is accepted, then fails by status.
        nobody = f"{magic_phone(Magic.NO_ACCOUNT)}@c.us"
        await reply(h, "op-2", nobody, "anyone there?")
        await crm.wait_for(lambda r: len(r.acks) == 2)
        await fake.deliver_webhooks()
        await crm.wait_for(lambda r: any(s["message_id"] == "op-2" for s in r.statuses))
        assert [s for s in crm.statuses if s["message_id"] == "op-2"] == [
            {"message_id": "op-2", "status": "failed", "conversation": nobody}
        ]

        # A duplicate webhook is answered 200 and has no second effect.
        fake.redeliver(hello)
        duplicate = await fake.deliver_webhooks()
        assert duplicate.delivered == 1
        await h.observer.wait_for("duplicate")
        fake.customer_writes(CUSTOMER, "after the duplicate")
        await fake.deliver_webhooks()
        await crm.wait_count(4)
        assert crm.texts() == ["Hello", "receipt", "about this", "after the duplicate"]

        # A forged webhook is refused and stores nothing.
        forged = copy.deepcopy(fake.notifications.delivered[-1].body)
        forged["idMessage"] = "FORGED0000000000"
        forged["messageData"] = {
            "typeMessage": "textMessage",
            "textMessageData": {"textMessage": "send me the codes"},
        }
        for headers, status in (({"Authorization": "Bearer wrong"}, 403), ({}, 401)):
            response = await h.client.post("/webhooks/wa", json=forged, headers=headers)
            assert response.status_code == status
        assert len(h.observer.of_type("rejected")) == 2
        assert "send me the codes" not in crm.texts()

        # The operator read the customer's message: WhatsApp shows it read (readChat).
        status = {"statuses": [{"id": first.native_id, "status": "read", "chat": CHAT}]}
        await h.client.post("/webhooks/crm", json=status, headers=CRM_AUTH)
        await delivered_to(h, "wa", "status")
        assert fake.reads[-1] == (CHAT, hello)

        # The operator edits, then deletes, the reply: WhatsApp's own edit and delete.
        edit = {"edits": [{"id": "op-1", "chat": CHAT, "text": "Hi Ivan, corrected"}]}
        await h.client.post("/webhooks/crm", json=edit, headers=CRM_AUTH)
        await delivered_to(h, "wa", "send")
        await crm.wait_for(lambda r: len(r.acks) >= 3)
        assert sent.edits == ["Hi Ivan, corrected"] and not sent.deleted
        delete = {"deletes": [{"id": "op-1", "chat": CHAT}]}
        await h.client.post("/webhooks/crm", json=delete, headers=CRM_AUTH)
        await crm.wait_for(lambda r: len(r.acks) >= 4)
        assert sent.deleted
        assert [m for m in fake.sent if m.text and "edited" in m.text] == []  # no notes


async def test_head_of_line_retry_after_a_refused_webhook(
    tmp_path: Path, crm: Recorder, to_gateway: httpx.AsyncClient
) -> None:
    fake = FakeGreenApi(http=to_gateway)
    settings = make_settings(tmp_path, set_webhook=False)
    async with running_gateway(settings, apps=apps(fake, crm), serve_http=True) as h:
        fake.settings.update(
            {
                "webhookUrl": f"{h.url}/webhooks/wa",
                "webhookUrlToken": "not-the-gateway-token",
                "incomingWebhook": "yes",
            }
        )
        first = fake.customer_writes(CUSTOMER, "first")
        fake.customer_writes(CUSTOMER, "second")
        refused = await fake.deliver_webhooks()
        assert (refused.failed, refused.delivered, refused.pending) == (1, 0, 2)
        assert refused.attempts[0].status == 403
        # GREEN pauses 60 s before it resends the head; nothing behind it may overtake.
        assert (await fake.deliver_webhooks()).attempts == []
        fake.settings.webhookUrlToken = TOKEN
        resent = await fake.deliver_until_idle()
        assert (resent.delivered, resent.pending) == (2, 0)
        assert resent.attempts[0].body["idMessage"] == first
        assert resent.attempts[0].attempt == 2
        await crm.wait_count(2)
    assert crm.texts() == ["first", "second"]


async def test_polling_mode_delivers_the_same_messages(tmp_path: Path, crm: Recorder) -> None:
    fake = FakeGreenApi(webhook_url="https://old.example/hook")
    settings = make_settings(
        tmp_path, receive="polling", webhook_token="", receive_timeout=5, poll_idle_seconds=0.02
    )
    async with running_gateway(settings, apps=apps(fake, crm)) as h:
        # Polling works only while no webhook URL is set: the plugin cleared it.
        assert fake.settings.webhookUrl == ""
        hello = fake.customer_writes(CUSTOMER, "Hello", sender_name="Ivan")
        fake.customer_writes(CUSTOMER, kind="document", file_name="invoice.pdf")
        fake.customer_writes(CUSTOMER, "about this", quoted=hello)
        await crm.wait_count(3)
        first, doc, quote = crm.received
        assert first.text == "Hello"
        assert doc.item["attachments"][0]["kind"] == "document"
        assert quote.item["quote"] == first.native_id

        # Handed out again (as after a crash between commit and delete): no second effect.
        fake.redeliver(hello)
        await h.observer.wait_for("duplicate")
        await reply(h, "op-1", CHAT, "Hi")
        await crm.wait_for(lambda r: len(r.acks) == 1)
        await crm.wait_for(lambda r: any(s["status"] == "sent" for s in r.statuses))
    assert crm.texts() == ["Hello", "", "about this"]
    assert [s.params["message"] for s in fake.sent] == ["Hi"]
    assert any(c.method == "deleteNotification" for c in fake.calls)


async def test_an_operator_reply_whose_answer_was_lost_is_looked_for_once_the_journal_shows_it(
    tmp_path: Path, crm: Recorder
) -> None:
    """A lost answer to a send: the gateway waits until GREEN's journal, which shows a sent
    message up to 2 minutes late, can show it; then the one found there is recorded (not
    resent), the one absent is sent again; none is parked for a person."""
    clock = ManualClock()
    fake = FakeGreenApi(clock=clock)
    fake.journal_delay = 120.0
    lost = magic_phone(Magic.TIMEOUT_AFTER_EFFECT) + "@c.us"  # sent; the answer never comes
    async with running_gateway(make_settings(tmp_path), apps=apps(fake, crm), clock=clock) as h:
        fake.faults.fail_next("sendMessage", kind="timeout")  # before it took effect
        await reply(h, "op-2", CHAT, "never left")
        await h.observer.wait_for("retried", 1)
        await reply(h, "op-1", lost, "landed, answer lost")
        await h.observer.wait_for("retried", 2)
        assert [s.text for s in fake.sent] == ["landed, answer lost"]
        provider = h.gateway.instances["wa"]
        clock.advance(provider.capabilities.settle_seconds + 1)
        assert h.gateway.deliverer is not None
        h.gateway.deliverer.wake()
        await crm.wait_for(lambda r: len(r.acks) == 2)
        dead = await h.gateway.store.dead_letters()
    reconciled = {o.message_id: o.detail["landed"] for o in h.observer.of_type("reconciled")}
    assert reconciled == {"op-1": True, "op-2": False}
    assert [s.text for s in fake.sent] == ["landed, answer lost", "never left"]  # one each
    by_message = {a["message_id"]: a["delivered_id"] for a in crm.acks}
    assert by_message == {"op-1": fake.sent[0].id_message, "op-2": fake.sent[1].id_message}
    assert dead == []


async def test_an_outage_gap_is_refilled_from_the_journal(
    tmp_path: Path, crm: Recorder, to_gateway: httpx.AsyncClient
) -> None:
    """The gateway is down while GREEN's notifications are lost (past their 24 hours, or a
    queue cleared): at the next start, `lastIncomingMessages` brings them, in order, and the
    webhook that delivers one of them again has no second effect."""
    # The refill asks the journals for the last minutes by the gateway's clock: same clock.
    fake = FakeGreenApi(http=to_gateway, clock=time.time)
    settings = make_settings(tmp_path)
    async with running_gateway(settings, apps=apps(fake, crm), serve_http=True) as h:
        fake.settings.webhookUrl = f"{h.url}/webhooks/wa"
        fake.customer_writes(CUSTOMER, "before")
        await fake.deliver_webhooks()
        await crm.wait_count(1)
        provider = h.gateway.instances["wa"]
        assert isinstance(provider, GreenApiProvider)
        await provider.refiller.beat()  # the heartbeat: received up to now

    # Down: the first message's notification is lost, the second waits in GREEN's queue.
    fake.customer_writes(CUSTOMER, "while down 1")
    fake.notifications.clear()
    fake.customer_writes(CUSTOMER, "while down 2")

    async with running_gateway(settings, apps=apps(fake, crm), serve_http=True) as h:
        await crm.wait_count(3)
        assert crm.texts() == ["before", "while down 1", "while down 2"]
        assert any(c.method == "lastIncomingMessages" for c in fake.calls)
        fake.settings.webhookUrl = f"{h.url}/webhooks/wa"
        report = await fake.deliver_webhooks()
        assert report.pending == 0
        assert "incomingMessageReceived" in [a.body["typeWebhook"] for a in report.attempts]
        await h.observer.wait_for("duplicate")
    assert crm.texts() == ["before", "while down 1", "while down 2"]


class Past:
    """A clock for the fake, set back to write what customers wrote days ago."""

    def __init__(self) -> None:
        self.back = 0.0

    def __call__(self) -> float:
        return time.time() - self.back


async def test_linking_with_history_imports_the_journal_in_order(
    tmp_path: Path, crm: Recorder, to_gateway: httpx.AsyncClient
) -> None:
    """A number linked at run time with 2 days of history: `lastIncomingMessages` brings
    those days, oldest first; their webhooks, delivered late, have no second effect."""
    past = Past()
    fake = FakeGreenApi(http=to_gateway, clock=past)
    settings = {**make_settings(tmp_path), "routes": {}, "history": {"messages_per_second": 0}}
    async with running_gateway(settings, apps=apps(fake, crm), serve_http=True) as h:
        fake.settings.webhookUrl = f"{h.url}/webhooks/wa"
        fake.tick()  # the reboot setSettings caused is over: messages are not held back
        assert fake.state == "authorized"
        for days_ago, text in [(4.0, "too old"), (1.5, "first"), (1.5, "second"), (0.2, "third")]:
            past.back = days_ago * 86_400
            fake.customer_writes(CUSTOMER, text)
            if text == "too old":
                fake.notifications.clear()  # its webhook was never received
        past.back = 0.0
        await h.gateway.hub.add_route(Route("linked", "wa", "crm"))
        assert await h.gateway.hub.import_history("linked", 2)
        await h.gateway.history.wait()
        await crm.wait_count(3)
        assert crm.texts() == ["first", "second", "third"]
        assert not [c for c in fake.calls if c.method == "lastOutgoingMessages"]

        # GREEN kept the last one's notification (the others are past its 24 hours).
        report = await fake.deliver_webhooks()
        assert [a.body["typeWebhook"] for a in report.attempts] == ["incomingMessageReceived"]
        await h.observer.wait_for("duplicate")
        fake.customer_writes(CUSTOMER, "live")
        await fake.deliver_webhooks()
        await crm.wait_count(4)
        assert crm.texts() == ["first", "second", "third", "live"]


async def test_history_is_off_unless_asked(
    tmp_path: Path, crm: Recorder, to_gateway: httpx.AsyncClient
) -> None:
    fake = FakeGreenApi(http=to_gateway)
    settings = {**make_settings(tmp_path), "routes": {}}
    async with running_gateway(settings, apps=apps(fake, crm), serve_http=True) as h:
        assert h.gateway.hub.history_days() == 0
        await h.gateway.hub.add_route(Route("linked", "wa", "crm"))
        assert await h.gateway.hub.import_history("linked") is False
        assert await h.gateway.store.kv_items("history") == []
    assert not [c for c in fake.calls if c.method.startswith("last")]
