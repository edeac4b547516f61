"""GREEN-API's journals: the fake answers as GREEN documents them, and the plugin reads a
journal item into the very event its webhook would have made (same dedupe key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes.greenapi import ALL_NOTIFICATIONS_ON, FakeGreenApi
from gateway_greenapi.journal import journal_events
from gateway_greenapi.notifications import Options, parse_notification
from gateway_greenapi.provider import GreenApiProvider
from gateway_greenapi.refill import CURSOR_KEY

from gateway import AccountState, AccountStatus, InboundEvent, Message
from gateway.testing.standalone import RecordingHub, asgi_mounts, standalone_provider

pytestmark = pytest.mark.anyio

CHAT = "79001234567@c.us"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeGreenApi:
    return FakeGreenApi(settings=ALL_NOTIFICATIONS_ON)


@pytest.fixture
async def api(fake: FakeGreenApi) -> AsyncIterator[httpx.AsyncClient]:
    mounts = asgi_mounts(fake.app, fake.api_url, fake.media_url)
    async with httpx.AsyncClient(mounts=mounts) as client:
        yield client


def make(http: httpx.AsyncClient, fake: FakeGreenApi, **options: Any) -> tuple[Any, RecordingHub]:
    config = {
        "api_url": fake.api_url,
        "id_instance": fake.id_instance,
        "api_token": fake.api_token,
        "webhook_token": "hook-token-0123456789",
        "set_webhook": False,
        **options,
    }
    return standalone_provider(GreenApiProvider, http, config)


async def test_journals_list_the_newest_first_within_the_minutes(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    old = fake.customer_writes(CHAT, "an hour ago")
    fake.advance(3600)
    first = fake.customer_writes(CHAT, "first")
    second = fake.customer_writes(CHAT, "second", quoted=first)
    typed = fake.phone_writes(CHAT, "typed on the phone")
    incoming = (await api.get(fake.url("lastIncomingMessages"), params={"minutes": 5})).json()
    assert [i["idMessage"] for i in incoming] == [second, first]
    assert incoming[1]["type"] == "incoming" and incoming[1]["textMessage"] == "first"
    assert incoming[0]["quotedMessage"]["stanzaId"] == first
    # Without `minutes`, the last 24 hours.
    everything = (await api.get(fake.url("lastIncomingMessages"))).json()
    assert [i["idMessage"] for i in everything] == [second, first, old]
    [outgoing] = (await api.get(fake.url("lastOutgoingMessages"))).json()
    assert (outgoing["idMessage"], outgoing["sendByApi"]) == (typed, False)
    history = await api.post(fake.url("getChatHistory"), json={"chatId": CHAT, "count": 2})
    assert [i["idMessage"] for i in history.json()] == [typed, second]
    bad = await api.get(fake.url("lastIncomingMessages"), params={"minutes": "soon"})
    assert bad.status_code == 400


async def test_messages_from_before_the_setting_are_not_in_the_journal(
    api: httpx.AsyncClient,
) -> None:
    fake = FakeGreenApi()  # every notification off, as a new instance
    fake.customer_writes(CHAT, "unseen")
    fake.settings.update({"incomingWebhook": "yes"})
    seen = fake.customer_writes(CHAT, "seen")
    mounts = asgi_mounts(fake.app, fake.api_url)
    async with httpx.AsyncClient(mounts=mounts) as client:
        items = (await client.get(fake.url("lastIncomingMessages"))).json()
    assert [i["idMessage"] for i in items] == [seen]


async def test_a_journal_item_makes_the_event_its_webhook_makes(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    options = Options(id_instance=fake.id_instance, mirror_phone_messages=True)
    hello = fake.customer_writes(CHAT, "Hello", sender_name="Ivan", sender_contact_name="Ivan P.")
    fake.customer_writes(CHAT, "about this", quoted=hello)
    fake.customer_writes(CHAT, kind="image", caption="receipt")
    fake.customer_writes(CHAT, kind="document", file_name="invoice.pdf")
    fake.customer_writes(CHAT, kind="location", location=(55.75, 37.62), location_name="Shop")
    fake.customer_writes(CHAT, kind="contact", contacts=[("Anna", "79005554433")])
    fake.customer_writes(CHAT, kind="extendedText", text="see https://example.com")
    fake.phone_writes(CHAT, "typed on the phone")
    webhooks = [e for body in fake.pending_webhooks for e in parse_notification(body, options)]
    incoming = (await api.get(fake.url("lastIncomingMessages"))).json()
    outgoing = (await api.get(fake.url("lastOutgoingMessages"))).json()
    from_journal = journal_events([incoming, outgoing], options)
    assert [e.dedupe_key for e in from_journal] == [e.dedupe_key for e in webhooks]
    for journal, webhook in zip(from_journal, webhooks, strict=True):
        assert isinstance(journal.event, Message) and isinstance(webhook.event, Message)
        assert journal.event.text == webhook.event.text
        assert journal.event.attachments == webhook.event.attachments
        assert journal.event.location == webhook.event.location
        assert journal.event.contacts == webhook.event.contacts
        assert journal.event.quoted_native_id == webhook.event.quoted_native_id
        assert journal.event.timestamp == webhook.event.timestamp
        assert journal.event.is_note == webhook.event.is_note
    assert from_journal[0].event.sender.name == "Ivan P."  # type: ignore[union-attr]


async def test_gateway_sends_and_old_messages_are_left_out(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    options = Options(id_instance=fake.id_instance, mirror_phone_messages=True)
    fake.customer_writes(CHAT, "old")
    fake.advance(600)
    fake.send("sendMessage", CHAT, {"chatId": CHAT, "message": "x"}, _text("x"), text="x")
    recent = fake.customer_writes(CHAT, "recent")
    incoming = (await api.get(fake.url("lastIncomingMessages"))).json()
    outgoing = (await api.get(fake.url("lastOutgoingMessages"))).json()
    events = journal_events([incoming, outgoing], options, since=fake.now() - 60)
    assert [e.event.native_id for e in events] == [recent]  # type: ignore[union-attr]


async def test_back_from_away_refills_the_gap(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    provider, hub = make(api, fake, state_poll_seconds=0)
    # A cursor from earlier: the fake's clock and the refiller's must agree.
    provider.refiller.clock = fake.clock
    await provider.context.state.put(CURSOR_KEY, fake.now())
    fake.set_state("notAuthorized")
    for body in fake.pending_webhooks:
        provider._saw(parse_notification(body, provider.options))
    assert provider.refiller.connected is False
    fake.customer_writes(CHAT, "lost while away")  # waits on the phone, then the journal
    fake.set_state("authorized")
    fake.notifications.clear()  # the notification never arrives
    assert await provider.refiller.refill() == 1
    [message] = [e.event for e in hub.events if isinstance(e.event, Message)]
    assert message.text == "lost while away"


def _text(text: str) -> dict[str, Any]:
    return {"typeMessage": "textMessage", "textMessageData": {"textMessage": text}}


async def test_a_number_connected_again_refills_in_the_background(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    provider, hub = make(api, fake, state_poll_seconds=0)
    provider.refiller.clock = fake.clock  # the journals' minutes by the fake's time
    await provider.context.state.put(CURSOR_KEY, fake.now())
    await provider.start()
    try:
        away = AccountState(AccountStatus.NEEDS_QR)
        provider._saw([InboundEvent("state:away", away)])
        fake.advance(600)
        fake.customer_writes(CHAT, "while the number was away")
        fake.notifications.clear()  # synced into the journal, never notified
        provider._saw([InboundEvent("state:back", AccountState(AccountStatus.CONNECTED))])
        [event] = await hub.wait_for(1)
        assert isinstance(event.event, Message)
        assert event.event.text == "while the number was away"
        assert provider.refiller.connected
    finally:
        await provider.stop()
