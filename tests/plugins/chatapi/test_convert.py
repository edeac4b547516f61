"""Every Chat API item type the spec names, normalized (spec section 1.5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway_chatapi.convert import (
    BadItem,
    account_state,
    parse_ack,
    parse_message,
    parse_vcard,
)
from gateway_chatapi.webhooks import ack_events, message_events
from gateway_fakes.chatapi import FakeChatApi

from gateway.models import AccountStatus, DeliveryStatus

CHAT = "79001234567@c.us"
GROUP = "79001234567-1479621234@g.us"


@pytest.fixture
def fake() -> FakeChatApi:
    return FakeChatApi()


def item_of(fake: FakeChatApi, msg_id: str) -> dict[str, Any]:
    found = fake.find(msg_id)
    assert found is not None
    return found.item


def parse(fake: FakeChatApi, msg_id: str, *, groups: bool = False) -> Any:
    parsed = parse_message(item_of(fake, msg_id), groups=groups)
    assert parsed.message is not None
    return parsed.message


def test_spec_text_example() -> None:
    item = {
        "id": "false_79001234567@c.us_3EB0C767D097B7C7C030",
        "body": "Hello, is the shop open?",
        "fromMe": False,
        "self": 0,
        "isForwarded": 0,
        "author": "79001234567@c.us",
        "time": 1700000000,
        "chatId": "79001234567@c.us",
        "messageNumber": 101,
        "type": "chat",
        "senderName": "Ivan",
        "caption": None,
        "quotedMsgBody": None,
        "quotedMsgId": None,
        "quotedMsgType": None,
        "chatName": "Ivan",
    }
    parsed = parse_message(item, groups=False)
    assert parsed.number == 101 and not parsed.from_me
    message = parsed.message
    assert message is not None
    assert message.conversation_id == CHAT
    assert message.native_id == item["id"]
    assert message.text == "Hello, is the shop open?"
    assert message.sender.id == CHAT
    assert message.sender.name == "Ivan"
    assert message.sender.phone == "79001234567"
    assert message.conversation_name == "Ivan"
    assert message.timestamp == 1700000000.0
    assert not message.is_note and not message.forwarded and not message.is_group


@pytest.mark.parametrize(
    ("kind", "attachment_kind", "mime"),
    [
        ("image", "image", "image/jpeg"),
        ("video", "video", "video/mp4"),
        ("audio", "audio", "audio/ogg"),
        ("ptt", "voice", "audio/ogg"),
        ("document", "document", "application/pdf"),
        ("sticker", "sticker", "image/webp"),
    ],
)
def test_media_types_keep_the_provider_url(
    fake: FakeChatApi, kind: Any, attachment_kind: str, mime: str
) -> None:
    msg_id = fake.customer_writes(CHAT, kind=kind, caption="look at this")
    message = parse(fake, msg_id)
    (attachment,) = message.attachments
    assert attachment.kind == attachment_kind
    assert attachment.url == item_of(fake, msg_id)["body"]
    assert attachment.url.startswith("https://api.chat-api.test/_fake/files/")
    assert attachment.mime_type == mime
    assert attachment.filename and "." in attachment.filename
    # The caption is the message text, and only there (it would show twice otherwise).
    assert message.text == "look at this"
    assert attachment.caption is None


def test_document_file_name_comes_from_the_url(fake: FakeChatApi) -> None:
    msg_id = fake.customer_writes(CHAT, kind="document", filename="Price list 2024.pdf")
    (attachment,) = parse(fake, msg_id).attachments
    assert attachment.filename == "Price list 2024.pdf"


def test_media_without_a_url_becomes_a_note() -> None:
    item = {"id": "false_x", "chatId": CHAT, "type": "image", "body": "/9j/4AAQSkZJRg=="}
    message = parse_message(item, groups=False).message
    assert message is not None and message.is_note and not message.attachments
    assert "image" in message.text


def test_location(fake: FakeChatApi) -> None:
    msg_id = fake.customer_writes(CHAT, "Red Square", kind="location", location=(55.75, 37.62))
    message = parse(fake, msg_id)
    assert message.location is not None
    assert (message.location.latitude, message.location.longitude) == (55.75, 37.62)
    assert message.location.address == "Red Square"


def test_unreadable_location_is_a_note() -> None:
    item = {"id": "false_x", "chatId": CHAT, "type": "location", "body": "somewhere"}
    message = parse_message(item, groups=False).message
    assert message is not None and message.is_note and "somewhere" in message.text


@pytest.mark.parametrize("kind", ["vcard", "multi_vcard"])
def test_contact_body_nested_past_the_parser_is_a_message_without_contacts(kind: str) -> None:
    item = {"id": "false_x", "chatId": CHAT, "type": kind, "body": "[" * 60_000}
    message = parse_message(item, groups=False).message
    assert message is not None and not message.contacts


def test_vcard(fake: FakeChatApi) -> None:
    msg_id = fake.customer_writes(CHAT, kind="vcard", contacts=[("Olga Petrova", "79005556677")])
    message = parse(fake, msg_id)
    (contact,) = message.contacts
    assert contact.name == "Olga Petrova"
    assert contact.phones == ("79005556677",)
    assert contact.vcard is not None and contact.vcard.startswith("BEGIN:VCARD")


def test_multi_vcard(fake: FakeChatApi) -> None:
    people = [("Olga", "79005556677"), ("Pavel", "77011234567")]
    msg_id = fake.customer_writes(CHAT, kind="multi_vcard", contacts=people)
    message = parse(fake, msg_id)
    assert [(c.name, c.phones) for c in message.contacts] == [
        ("Olga", ("79005556677",)),
        ("Pavel", ("77011234567",)),
    ]


def test_multi_vcard_as_a_json_list() -> None:
    cards = [
        "BEGIN:VCARD\nFN:A\nTEL:+7 900 111-22-33\nEND:VCARD",
        "BEGIN:VCARD\nN:Doe;John\nEND:VCARD",
    ]
    item = {"id": "false_x", "chatId": CHAT, "type": "multi_vcard", "body": json.dumps(cards)}
    message = parse_message(item, groups=False).message
    assert message is not None
    assert [(c.name, c.phones) for c in message.contacts] == [
        ("A", ("+79001112233",)),
        ("John Doe", ()),
    ]


def test_vcard_without_name_or_phone_is_nothing() -> None:
    assert parse_vcard("BEGIN:VCARD\nVERSION:3.0\nEND:VCARD") is None


def test_call_log_is_a_readable_note(fake: FakeChatApi) -> None:
    msg_id = fake.customer_writes(CHAT, kind="call_log", sender_name="Ivan")
    message = parse(fake, msg_id)
    assert message.is_note
    assert message.text == "📞 WhatsApp call from Ivan"


def test_unknown_types_become_notes_and_service_types_are_skipped() -> None:
    unknown = {"id": "false_a", "chatId": CHAT, "type": "poll_creation", "body": "Which day?"}
    message = parse_message(unknown, groups=False).message
    assert message is not None and message.is_note
    assert message.text == "[unsupported WhatsApp message type 'poll_creation']: Which day?"
    service = {"id": "false_b", "chatId": CHAT, "type": "e2e_notification", "body": ""}
    assert parse_message(service, groups=False).message is None
    revoked = {"id": "false_c", "chatId": CHAT, "type": "revoked", "body": ""}
    note = parse_message(revoked, groups=False).message
    assert note is not None and note.is_note and "deleted" in note.text


def test_button_replies_are_text() -> None:
    item = {"id": "false_a", "chatId": CHAT, "type": "buttons_response", "body": "Yes"}
    message = parse_message(item, groups=False).message
    assert message is not None and message.text == "Yes" and not message.is_note


def test_quoted_reply_and_forwarded(fake: FakeChatApi) -> None:
    first = fake.customer_writes(CHAT, "Do you deliver?")
    photo = fake.customer_writes(CHAT, kind="image")
    reply = fake.customer_writes(CHAT, "to Kazan?", quoted=first, forwarded=True)
    on_photo = fake.customer_writes(CHAT, "this one", quoted=photo)
    message = parse(fake, reply)
    assert message.quoted_native_id == first
    assert message.quoted_text == "Do you deliver?"
    assert message.forwarded
    # A quoted file's body is its URL: a label reads better.
    assert parse(fake, on_photo).quoted_text == "[image]"


def test_groups_only_when_enabled(fake: FakeChatApi) -> None:
    msg_id = fake.customer_writes(GROUP, "hi all", author="79005556677", sender_name="Olga")
    assert parse_message(item_of(fake, msg_id), groups=False).message is None
    message = parse(fake, msg_id, groups=True)
    assert message.is_group
    assert message.conversation_id == GROUP
    assert message.sender.id == "79005556677@c.us"
    assert message.sender.name == "Olga"
    assert message.sender.phone == "79005556677"


def test_status_broadcast_is_ignored() -> None:
    item = {"id": "false_s", "chatId": "status@broadcast", "type": "image", "body": "https://x/y"}
    assert parse_message(item, groups=True).message is None


def test_phone_typed_messages_are_business_notes(fake: FakeChatApi) -> None:
    msg_id = fake.phone_writes(CHAT, "We open at 9")
    parsed = parse_message(item_of(fake, msg_id), groups=False)
    assert parsed.from_me
    message = parsed.message
    assert message is not None and message.is_note and message.from_me
    assert message.text == "We open at 9"  # the destination marks it in its language
    assert message.sender.id == fake.me_id
    assert message.conversation_id == CHAT


def test_items_without_id_or_chat_are_bad() -> None:
    with pytest.raises(BadItem):
        parse_message({"body": "x", "chatId": CHAT}, groups=False)
    with pytest.raises(BadItem):
        parse_message(["not", "an", "object"], groups=False)


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("sent", DeliveryStatus.SENT),
        ("delivered", DeliveryStatus.DELIVERED),
        ("viewed", DeliveryStatus.READ),
    ],
)
def test_acks(word: str, status: DeliveryStatus) -> None:
    item = {"id": "true_79001234567@c.us_3EB0", "queueNumber": 17, "chatId": CHAT, "status": word}
    parsed = parse_ack(item)
    assert parsed is not None
    assert parsed[0] == word
    assert parsed[1].native_id == item["id"]
    assert parsed[1].status == status
    assert parsed[1].conversation_id == CHAT


def test_unknown_ack_status_is_ignored() -> None:
    assert parse_ack({"id": "true_x", "status": "pending"}) is None


@pytest.mark.parametrize(
    ("state", "substatus", "expected"),
    [
        ("authenticated", "normal", AccountStatus.CONNECTED),
        ("authenticated", "phone", AccountStatus.DISCONNECTED),
        ("got qr code", "normal", AccountStatus.NEEDS_QR),
        ("loading", "loading", AccountStatus.STARTING),
        ("init", "normal", AccountStatus.STARTING),
        ("not_paid", "normal", AccountStatus.UNPAID),
    ],
)
def test_account_states(state: str, substatus: str, expected: AccountStatus) -> None:
    fake = FakeChatApi(state="authenticated")
    fake.set_state(state, substatus=substatus)
    result = account_state(fake.status_json())
    assert result.status == expected
    assert result.detail
    if expected == AccountStatus.NEEDS_QR:
        assert result.qr is not None and result.qr.startswith("data:image/png;base64,")


def test_account_state_without_status_is_unknown() -> None:
    assert account_state({}).status == AccountStatus.UNKNOWN


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_dedupe_keys(fake: FakeChatApi) -> None:
    async def never(_: str) -> bool:
        return False

    first = fake.customer_writes(CHAT, "one")
    second = fake.customer_writes(CHAT, "two")
    items = [item_of(fake, first), item_of(fake, second)]
    parsed = await message_events(
        items, instance_id="1101", groups=False, mirror_phone_messages=False, is_own=never
    )
    assert [e.dedupe_key for e in parsed.events] == [
        f"chatapi:1101:{first}",
        f"chatapi:1101:{second}",
    ]
    assert parsed.highest == 2
    acks = ack_events(
        [{"id": "true_x", "status": "delivered"}, {"id": "true_x", "status": "viewed"}],
        instance_id="1101",
    )
    assert [e.dedupe_key for e in acks] == [
        "chatapi:1101:true_x:delivered",
        "chatapi:1101:true_x:viewed",
    ]
