"""Parsing Cloud API webhooks: every message type, statuses, batches, other numbers."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_cloudapi.webhooks import parse_body, signature_valid
from gateway_fakes.cloudapi import FakeClock, FakeCloudApi
from gateway_fakes.cloudapi.webhooks import build_posts

from gateway.models import AccountStatus, DeliveryStatus, Message, StatusUpdate

PNID = "106540352242922"
CUSTOMER = "16505551234"


def link(media_id: str, filename: str | None, kind: str, sent_at: float | None) -> str:
    return f"https://gw.test/m/{media_id}/{filename or kind}"


def parse(body: Any, display: str | None = None) -> Any:
    return parse_body(body, phone_number_id=PNID, display_number=display, link=link)


def posts(fake: FakeCloudApi, *, batch: bool = True) -> list[Any]:
    events, fake.pending = fake.pending, []
    return build_posts(
        events, waba_id=fake.waba_id, metadata=fake.metadata, batch=batch, changes_per_entry=2
    )


def one(fake: FakeCloudApi) -> Message:
    (body,) = posts(fake)
    (event,) = parse(body).events
    assert isinstance(event.event, Message)
    return event.event


def envelope(value: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}],
    }


def message_value(*items: dict[str, Any], pnid: str = PNID) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Sheena"}, "wa_id": CUSTOMER}],
        "messages": list(items),
    }


def item(kind: str, obj: Any, **extra: Any) -> dict[str, Any]:
    return {"from": CUSTOMER, "id": f"wamid.{kind}", "timestamp": "1749416383", "type": kind,
            kind: obj, **extra}  # fmt: skip


@pytest.fixture
def fake() -> FakeCloudApi:
    return FakeCloudApi(clock=FakeClock(1_750_000_000.0))


def test_text_with_sender_conversation_and_dedupe_key(fake: FakeCloudApi) -> None:
    wamid = fake.customer_writes(CUSTOMER, "Does it come in red?", name="Sheena Nelson")
    (body,) = posts(fake)
    parsed = parse(body)
    (event,) = parsed.events
    message = event.event
    assert event.dedupe_key == f"cloudapi:{PNID}:{wamid}"
    assert isinstance(message, Message)
    assert (message.conversation_id, message.native_id, message.text) == (
        CUSTOMER, wamid, "Does it come in red?"
    )  # fmt: skip
    assert message.sender.name == message.conversation_name == "Sheena Nelson"
    assert message.sender.phone == f"+{CUSTOMER}"
    assert message.timestamp == 1_750_000_000.0
    assert parsed.last_inbound == {CUSTOMER: 1_750_000_000.0}
    assert parsed.display_number == "15550783881"


@pytest.mark.parametrize(
    ("kind", "expected_kind", "mime"),
    [
        ("image", "image", "image/jpeg"),
        ("video", "video", "video/mp4"),
        ("document", "document", "application/pdf"),
        ("audio", "audio", "audio/mpeg"),
        ("voice", "voice", "audio/ogg; codecs=opus"),
        ("sticker", "sticker", "image/webp"),
    ],
)
def test_media_keep_their_id_as_a_link(
    fake: FakeCloudApi, kind: str, expected_kind: str, mime: str
) -> None:
    caption = "look" if kind in ("image", "video", "document") else ""
    fake.customer_writes(CUSTOMER, caption, kind=kind, filename="invoice.pdf")
    message = one(fake)
    (attachment,) = message.attachments
    media_id = fake.inbound[0].message["audio" if kind == "voice" else kind]["id"]
    assert attachment.kind == expected_kind
    assert attachment.mime_type == mime
    assert attachment.url.startswith(f"https://gw.test/m/{media_id}/")
    assert message.text == caption
    if kind == "document":
        assert attachment.filename == "invoice.pdf"
        assert attachment.url.endswith("/invoice.pdf")
    else:
        assert attachment.filename is None
        # The link still names the file, with an extension from the mime type.
        assert attachment.url.rsplit("/", 1)[1].startswith(expected_kind + ".")


def test_location(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "Meta HQ", kind="location")
    message = one(fake)
    assert message.location is not None
    assert (message.location.latitude, message.location.longitude) == (37.4847, -122.1477)
    assert message.location.name == "Meta HQ"
    assert message.location.address == "1 Hacker Way, Menlo Park, CA 94025"
    assert message.text == ""  # shown once, from `location`, by the destination


def test_contacts_carry_a_vcard(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "Jane Doe", kind="contacts")
    message = one(fake)
    (contact,) = message.contacts
    assert contact.name == "Jane Doe"
    assert contact.phones == ("+1 650-555-0199",)
    assert contact.vcard is not None
    assert "FN:Jane Doe" in contact.vcard
    assert "TEL;type=CELL;waid=16505550199:+1 650-555-0199" in contact.vcard
    assert contact.vcard.startswith("BEGIN:VCARD\r\nVERSION:3.0")
    assert message.text == ""  # shown once, from `contacts`, by the destination


def test_interactive_and_button_replies(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "Yes, book it", kind="interactive")
    fake.customer_writes(CUSTOMER, "Stop promotions", kind="button")
    listed = {"id": "r1", "title": "Tuesday", "description": "10:00"}
    form = {"name": "flow", "body": "Sent", "response_json": '{"a":1}'}
    body = envelope(
        message_value(
            item("interactive", {"type": "list_reply", "list_reply": listed}),
            item("interactive", {"type": "nfm_reply", "nfm_reply": form}),
        )
    )
    texts = [e.event.text for e in parse(posts(fake)[0]).events + parse(body).events]
    assert texts == ["Yes, book it", "Stop promotions", "Tuesday — 10:00", 'Sent: {"a":1}']


def test_reactions_are_notes_quoting_the_message(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "👍", kind="reaction", context="wamid.ours")
    message = one(fake)
    assert (message.text, message.quoted_native_id, message.is_note) == (
        "reacted 👍 to a message", "wamid.ours", True
    )  # fmt: skip
    fake.customer_writes(CUSTOMER, "", kind="reaction", context="wamid.ours")
    assert one(fake).text == "removed a reaction"


def test_order_system_unsupported_and_unknown_are_readable_notes(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "please hurry", kind="order")
    fake.customer_writes(CUSTOMER, "", kind="system")
    fake.customer_writes(CUSTOMER, "", kind="unsupported")
    messages = [e.event for e in parse(posts(fake)[0]).events]
    unknown = parse(envelope(message_value(item("poll", {"q": 1})))).events[0].event
    assert isinstance(unknown, Message)
    assert all(isinstance(m, Message) and m.is_note for m in [*messages, unknown])
    order, system, unsupported = messages
    assert isinstance(order, Message) and isinstance(system, Message)
    assert order.text == "🛒 order\n1 x sku-1 (9.99 USD each)\nplease hurry"
    assert system.text == f"User {CUSTOMER} changed their phone number"
    assert isinstance(unsupported, Message)
    assert unsupported.text.startswith("sent a message the WhatsApp Cloud API cannot show (131051")
    assert unknown.text == "sent a poll message the gateway cannot show"


def test_system_notices_and_welcome_requests(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "", kind="system")
    fake.customer_writes(CUSTOMER, "", kind="request_welcome")
    parsed = parse(posts(fake)[0])
    # A system notice is shown but is not the customer writing; a welcome request is the
    # customer opening the chat: it opens the window but has nothing to show.
    assert len(parsed.events) == 1
    assert parsed.last_inbound == {CUSTOMER: 1_750_000_000.0}


def test_quote_forward_referral_and_product_context(fake: FakeCloudApi) -> None:
    first = fake.customer_writes(CUSTOMER, "one")
    fake.customer_writes(CUSTOMER, "two", context=first, forwarded=True)
    fake.customer_writes(CUSTOMER, "three", frequently_forwarded=True)
    _, quoted, forwarded = (e.event for e in parse(posts(fake)[0]).events)
    assert isinstance(quoted, Message) and isinstance(forwarded, Message)
    assert (quoted.quoted_native_id, quoted.forwarded) == (first, True)
    assert (forwarded.quoted_native_id, forwarded.forwarded) == (None, True)
    ad = item(
        "text",
        {"body": "Is this available?"},
        context={"from": "15550783881", "id": "wamid.catalog",
                 "referred_product": {"catalog_id": "1", "product_retailer_id": "sku-9"}},
        referral={"source_url": "https://fb.me/ad", "source_type": "ad", "headline": "Sale"},
    )  # fmt: skip
    message = parse(envelope(message_value(ad))).events[0].event
    assert isinstance(message, Message)
    assert message.text == (
        "Is this available?\n(about product sku-9)\n(came from Sale https://fb.me/ad)"
    )


def test_batches_of_entries_and_changes_each_item_its_own_event(fake: FakeCloudApi) -> None:
    fake.customer_writes("16505550001", "a1")
    fake.customer_writes("16505550002", "b1")
    fake.customer_writes("16505550001", "a2")
    fake.customer_writes("16505550003", "c1")
    (body,) = posts(fake)
    assert len(body["entry"]) == 2  # three customers' changes, two changes per entry
    parsed = parse(body)
    assert sorted(e.event.text for e in parsed.events) == ["a1", "a2", "b1", "c1"]
    assert len({e.dedupe_key for e in parsed.events}) == 4
    # Re-parsing the same body gives the same keys: the store drops the second copy.
    assert [e.dedupe_key for e in parse(body).events] == [e.dedupe_key for e in parsed.events]


def test_statuses_in_any_order_with_failures(fake: FakeCloudApi) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    posts(fake)
    from gateway_fakes.cloudapi.sending import handle_messages

    sent_id = handle_messages(
        fake,
        {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {"body": "x"}},
    )["messages"][0]["id"]
    fake.mark_read(sent_id)
    fake.mark_delivered(sent_id)
    fake.mark_failed(sent_id, 131026)
    events = parse(posts(fake)[0]).events
    updates = [e.event for e in events]
    assert all(isinstance(u, StatusUpdate) for u in updates)
    assert [e.dedupe_key for e in events] == [
        f"cloudapi:{sent_id}:{s}" for s in ("sent", "read", "delivered", "failed")
    ]
    assert [u.status for u in updates] == [  # type: ignore[union-attr]
        DeliveryStatus.SENT, DeliveryStatus.READ, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED
    ]  # fmt: skip
    failed = updates[-1]
    assert isinstance(failed, StatusUpdate)
    assert failed.conversation_id == CUSTOMER
    assert failed.error_code == "131026"
    assert failed.error_text is not None and failed.error_text.startswith("WhatsApp cannot deliver")


def test_other_numbers_and_malformed_items_are_skipped_not_refused() -> None:
    theirs = envelope(message_value(item("text", {"body": "not for us"}), pnid="999"))
    broken = envelope(message_value({"type": "text"}, "garbage", item("text", {"body": "ok"})))
    assert parse(theirs).events == []
    assert parse(theirs).skipped
    parsed = parse(broken)
    assert [e.event.text for e in parsed.events] == ["ok"]
    assert len(parsed.skipped) == 2
    assert parse({"object": "page"}).events == []
    assert parse([1, 2]).events == []


def test_account_updates_become_account_states(fake: FakeCloudApi) -> None:
    fake.transition("flag")
    fake.transition("unflag")
    fake.transition("ban")
    fake.transition("reinstate")
    fake.transition("restrict")
    states = [e.event for e in parse(posts(fake)[0], display="15550783881").events]
    flagged = "quality flagged: improve it within 7 days or the messaging limit drops"
    assert [(s.status, s.detail) for s in states] == [  # type: ignore[union-attr]
        (AccountStatus.CONNECTED, flagged),
        (AccountStatus.CONNECTED, None),
        (AccountStatus.BANNED, "the WhatsApp Business Account was disabled on 2025-06-15"),
        (AccountStatus.CONNECTED, "the account was reinstated"),
        (AccountStatus.CONNECTED, "restricted: RESTRICTED_BIZ_INITIATED_MESSAGING"),
    ]  # fmt: skip
    fake.transition("lift_restriction")
    fake.transition("flag")
    # The same events for another number of the account are not this instance's.
    assert parse(posts(fake)[0], display="15550000000").events == []


def test_signature_over_raw_bytes() -> None:
    from gateway_fakes.cloudapi import encode, signature

    body = encode({"text": "Привет / ñ"})  # Meta's escaping: re-serializing would differ
    assert signature_valid(body, signature("s3cret", body), "s3cret")
    assert signature_valid(
        body, signature("s3cret", body).upper().replace("SHA256", "sha256"), "s3cret"
    )
    assert not signature_valid(body, signature("other", body), "s3cret")
    assert not signature_valid(body + b" ", signature("s3cret", body), "s3cret")
    assert not signature_valid(body, None, "s3cret")
    assert not signature_valid(body, "sha1=abc", "s3cret")
