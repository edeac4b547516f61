"""Every GREEN-API notification shape in spec 2.4 becomes the right normalized event."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gateway_fakes.greenapi import ALL_NOTIFICATIONS_ON, FakeGreenApi, Magic, magic_phone
from gateway_greenapi.notifications import Options, Unparsable, parse_notification

from gateway.models import (
    AccountStatus,
    Delete,
    DeliveryStatus,
    Edit,
    Message,
    StatusUpdate,
)

CUSTOMER = "79001234567"
CHAT = "79001234567@c.us"
GROUP = "120363025000000001@g.us"
SPEC_INSTANCE = {"idInstance": 7105000001, "wid": "79876543210@c.us", "typeInstance": "whatsapp"}
SPEC = Options(id_instance="7105000001")


@pytest.fixture
def fake() -> FakeGreenApi:
    return FakeGreenApi(settings=ALL_NOTIFICATIONS_ON)


def options(fake: FakeGreenApi, **flags: bool) -> Options:
    return Options(id_instance=fake.id_instance, **flags)


def last_body(fake: FakeGreenApi) -> dict[str, Any]:
    return copy.deepcopy(fake.pending_webhooks[-1])


def one(fake: FakeGreenApi, **flags: bool) -> Any:
    events = parse_notification(last_body(fake), options(fake, **flags))
    assert len(events) == 1
    return events[0]


def message(fake: FakeGreenApi, **flags: bool) -> Message:
    event = one(fake, **flags).event
    assert isinstance(event, Message)
    return event


# -- the spec's own examples -----------------------------------------------------------


def test_spec_incoming_text() -> None:
    body = {
        "typeWebhook": "incomingMessageReceived",
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000000,
        "idMessage": "F7AEC1B7086ECDC7E6E45923F5EDB825",
        "senderData": {
            "chatId": CHAT,
            "sender": CHAT,
            "chatName": "Ivan",
            "senderName": "Ivan",
            "senderContactName": "Ivan P.",
        },
        "messageData": {
            "typeMessage": "textMessage",
            "textMessageData": {"textMessage": "Hello, is the shop open?"},
        },
    }
    [inbound] = parse_notification(body, SPEC)
    assert inbound.dedupe_key == (
        f"greenapi:7105000001:{CHAT}:F7AEC1B7086ECDC7E6E45923F5EDB825:incomingMessageReceived"
    )
    event = inbound.event
    assert isinstance(event, Message)
    assert event.conversation_id == CHAT
    assert event.native_id == "F7AEC1B7086ECDC7E6E45923F5EDB825"
    assert event.text == "Hello, is the shop open?"
    assert event.sender.id == CHAT
    assert event.sender.name == "Ivan P."
    assert event.sender.phone == CUSTOMER
    assert event.conversation_name == "Ivan"
    assert event.timestamp == 1700000000.0
    assert not event.is_note and not event.is_group and not event.forwarded


def test_spec_reply_new_style() -> None:
    body = {
        "typeWebhook": "incomingMessageReceived",
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000100,
        "idMessage": "165682394AEEFFB519B13DD51491DF65",
        "senderData": {"chatId": CHAT, "sender": CHAT, "chatName": "Ivan", "senderName": "Ivan"},
        "messageData": {
            "typeMessage": "extendedTextMessage",
            "extendedTextMessageData": {
                "text": "Yes, this one",
                "stanzaId": "3EB063C771F28EB323FAE3",
                "participant": "79876543210@c.us",
            },
            "quotedMessage": {
                "stanzaId": "3EB063C771F28EB323FAE3",
                "participant": "79876543210@c.us",
                "typeMessage": "textMessage",
                "textMessage": "Which size?",
            },
        },
    }
    event = parse_notification(body, SPEC)[0].event
    assert isinstance(event, Message)
    assert event.text == "Yes, this one"
    assert event.quoted_native_id == "3EB063C771F28EB323FAE3"
    assert event.quoted_text == "Which size?"


def test_spec_reply_legacy_style_without_object() -> None:
    body = {
        "typeWebhook": "incomingMessageReceived",
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000100,
        "idMessage": "165682394AEEFFB519B13DD51491DF66",
        "senderData": {"chatId": CHAT, "sender": CHAT, "senderName": "Ivan"},
        "messageData": {
            "typeMessage": "quotedMessage",
            "extendedTextMessageData": {
                "text": "Yes, this one",
                "stanzaId": "3EB063C771F28EB323FAE3",
                "participant": "79876543210@c.us",
            },
        },
    }
    event = parse_notification(body, SPEC)[0].event
    assert isinstance(event, Message)
    assert (event.text, event.quoted_native_id, event.quoted_text) == (
        "Yes, this one",
        "3EB063C771F28EB323FAE3",
        None,
    )


def test_spec_document() -> None:
    url = "https://sw-media-7105.storage.yandexcloud.net/7105000001/f3f4a306.pdf"
    body = {
        "typeWebhook": "incomingMessageReceived",
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000200,
        "idMessage": "02392146E5104CE93C",
        "senderData": {"chatId": CHAT, "sender": CHAT, "senderName": "Ivan"},
        "messageData": {
            "typeMessage": "documentMessage",
            "fileMessageData": {
                "downloadUrl": url,
                "caption": "",
                "fileName": "price-list.pdf",
                "jpegThumbnail": "",
                "mimeType": "application/pdf",
                "forwardingScore": 0,
                "isForwarded": False,
            },
        },
    }
    event = parse_notification(body, SPEC)[0].event
    assert isinstance(event, Message)
    [attachment] = event.attachments
    assert (attachment.kind, attachment.url, attachment.filename, attachment.mime_type) == (
        "document",
        url,
        "price-list.pdf",
        "application/pdf",
    )
    assert event.text == ""


@pytest.mark.parametrize(
    ("status", "expected", "code"),
    [
        ("sent", DeliveryStatus.SENT, None),
        ("delivered", DeliveryStatus.DELIVERED, None),
        ("read", DeliveryStatus.READ, None),
        ("failed", DeliveryStatus.FAILED, "failed"),
        ("noAccount", DeliveryStatus.FAILED, "noAccount"),
        ("notInGroup", DeliveryStatus.FAILED, "notInGroup"),
        ("yellowCard", DeliveryStatus.FAILED, "yellowCard"),
    ],
)
def test_spec_outgoing_status(status: str, expected: DeliveryStatus, code: str | None) -> None:
    body = {
        "typeWebhook": "outgoingMessageStatus",
        "chatId": CHAT,
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000300,
        "idMessage": "ECE6BBEA514B66872790C3D9D52C5C19",
        "status": status,
        "sendByApi": True,
    }
    [inbound] = parse_notification(body, SPEC)
    assert inbound.dedupe_key == f"greenapi:7105000001:ECE6BBEA514B66872790C3D9D52C5C19:{status}"
    update = inbound.event
    assert isinstance(update, StatusUpdate)
    assert update.status is expected
    assert update.conversation_id == CHAT
    assert update.error_code == code
    assert (update.error_text is not None) == (code is not None)


def test_failure_description_is_kept() -> None:
    body = {
        "typeWebhook": "outgoingMessageStatus",
        "chatId": GROUP,
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000300,
        "idMessage": "ECE6",
        "status": "failed",
        "description": "SWE004: the number of participants in the group has been exceeded - 300",
        "sendByApi": True,
    }
    update = parse_notification(body, SPEC)[0].event
    assert isinstance(update, StatusUpdate)
    assert update.error_code == "failed"
    assert update.error_text is not None and update.error_text.startswith("SWE004")


def test_statuses_of_phone_messages_are_not_ours() -> None:
    body = {
        "typeWebhook": "outgoingMessageStatus",
        "chatId": CHAT,
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1,
        "idMessage": "3EB0",
        "status": "read",
        "sendByApi": False,
    }
    assert parse_notification(body, SPEC) == []


def test_spec_state_changed() -> None:
    body = {
        "typeWebhook": "stateInstanceChanged",
        "instanceData": {**SPEC_INSTANCE, "wid": ""},
        "timestamp": 1700000400,
        "stateInstance": "notAuthorized",
    }
    [inbound] = parse_notification(body, SPEC)
    assert inbound.event.kind == "account"
    assert inbound.event.status is AccountStatus.NEEDS_QR  # type: ignore[union-attr]


def test_spec_quota_exceeded_is_acknowledged_and_dropped() -> None:
    body = {
        "typeWebhook": "quotaExceeded",
        "instanceData": SPEC_INSTANCE,
        "timestamp": 1700000500,
        "quotaData": {"method": "correspondents", "used": 3, "total": 3},
    }
    assert parse_notification(body, SPEC) == []


# -- every kind the fake emits ---------------------------------------------------------


def test_text_and_extended_text(fake: FakeGreenApi) -> None:
    fake.customer_writes(CUSTOMER, "plain", sender_name="Ivan", chat_name="Ivan")
    assert message(fake).text == "plain"
    fake.customer_writes(CUSTOMER, "see https://shop.example", kind="extendedText", title="Shop")
    assert message(fake).text == "see https://shop.example"


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("image", "photo.jpg", "image"),
        ("video", "clip.mp4", "video"),
        ("document", "terms.pdf", "document"),
        ("audio", "song.mp3", "audio"),
        ("audio", "voice.ogg", "voice"),
        ("sticker", "sticker.webp", "sticker"),
    ],
)
def test_files(fake: FakeGreenApi, kind: Any, name: str, expected: str) -> None:
    fake.customer_writes(CUSTOMER, kind=kind, file_name=name, caption="look")
    event = message(fake)
    [attachment] = event.attachments
    assert attachment.kind == expected
    assert attachment.url.startswith(fake.media_url)
    assert attachment.filename == name
    assert attachment.mime_type
    assert event.text == "look"


def test_file_without_link_is_still_shown(fake: FakeGreenApi) -> None:
    data = {
        "typeMessage": "imageMessage",
        "fileMessageData": {"downloadUrl": "", "caption": "x", "mimeType": "image/jpeg"},
    }
    fake.customer_writes(CUSTOMER, kind="raw", message_data=data)
    event = message(fake)
    assert event.attachments == ()
    assert event.text.startswith("x\n[image]")


def test_location(fake: FakeGreenApi) -> None:
    fake.customer_writes(
        CUSTOMER, kind="location", location=(55.75, 37.61), location_name="Shop", address="Main"
    )
    location = message(fake).location
    assert location is not None
    assert (location.latitude, location.longitude, location.name, location.address) == (
        55.75,
        37.61,
        "Shop",
        "Main",
    )


def test_contact_and_contacts(fake: FakeGreenApi) -> None:
    fake.customer_writes(CUSTOMER, kind="contact", contacts=[("Anna Smith", "79001112233")])
    [contact] = message(fake).contacts
    assert contact.name == "Anna Smith"
    assert contact.phones == ("79001112233",)
    assert contact.vcard and "BEGIN:VCARD" in contact.vcard
    fake.customer_writes(
        CUSTOMER, kind="contacts", contacts=[("Anna", "79001112233"), ("Boris", "79004445566")]
    )
    contacts = message(fake).contacts
    assert [(c.name, c.phones) for c in contacts] == [
        ("Anna", ("79001112233",)),
        ("Boris", ("79004445566",)),
    ]


@pytest.mark.parametrize("legacy", [False, True])
def test_quotes_in_both_shapes(fake: FakeGreenApi, legacy: bool) -> None:
    first = fake.customer_writes(CUSTOMER, "Which size?")
    fake.customer_writes(CUSTOMER, "this one", quoted=first, legacy_quote=legacy)
    body = last_body(fake)
    expected_type = "quotedMessage" if legacy else "extendedTextMessage"
    assert body["messageData"]["typeMessage"] == expected_type
    event = message(fake)
    assert (event.text, event.quoted_native_id, event.quoted_text) == (
        "this one",
        first,
        "Which size?",
    )


def test_quote_on_a_file_and_quoted_file(fake: FakeGreenApi) -> None:
    photo = fake.customer_writes(CUSTOMER, kind="image", caption="the red one")
    fake.customer_writes(CUSTOMER, kind="document", file_name="a.pdf", quoted=photo)
    event = message(fake)
    assert event.quoted_native_id == photo
    assert event.quoted_text == "the red one"
    assert event.attachments[0].kind == "document"


def test_forwarded(fake: FakeGreenApi) -> None:
    fake.customer_writes(CUSTOMER, "fwd", kind="extendedText", forwarded=True)
    assert message(fake).forwarded
    fake.customer_writes(CUSTOMER, kind="image", forwarded=True)
    assert message(fake).forwarded


def test_reaction_is_a_note_on_its_message(fake: FakeGreenApi) -> None:
    target = fake.customer_writes(CUSTOMER, "hi")
    fake.customer_writes(CUSTOMER, "👍", kind="reaction", target=target)
    event = message(fake)
    assert (event.text, event.quoted_native_id, event.is_note) == ("reacted 👍", target, True)
    fake.customer_writes(CUSTOMER, "", kind="reaction", target=target)
    assert message(fake).text == "removed a reaction"


def test_edit_and_delete_map_to_native_events(fake: FakeGreenApi) -> None:
    target = fake.customer_writes(CUSTOMER, "helo")
    edit_id = fake.customer_writes(CUSTOMER, "hello", kind="edited", target=target)
    inbound = one(fake)
    assert inbound.dedupe_key.endswith(f":{edit_id}:incomingMessageReceived")
    assert inbound.event == Edit(conversation_id=CHAT, native_id=target, text="hello")
    fake.customer_writes(CUSTOMER, kind="deleted", target=target)
    assert one(fake).event == Delete(conversation_id=CHAT, native_id=target)


def test_poll_and_vote(fake: FakeGreenApi) -> None:
    poll = fake.customer_writes(CUSTOMER, "Colour?", kind="poll", options=["red", "blue"])
    assert message(fake).text == "📊 Poll: Colour?\n1. red\n2. blue"
    fake.customer_writes(
        CUSTOMER, "Colour?", kind="pollUpdate", target=poll, votes={"blue": [CHAT], "red": []}
    )
    vote = message(fake)
    assert (vote.text, vote.quoted_native_id, vote.is_note) == (
        "voted in the poll «Colour?»: blue",
        poll,
        True,
    )


@pytest.mark.parametrize("kind", ["buttonsResponse", "templateButtonsReply", "listResponse"])
def test_button_and_list_replies_are_the_customers_words(fake: FakeGreenApi, kind: Any) -> None:
    offer = fake.phone_writes(CUSTOMER, "Pick one")
    fake.customer_writes(CUSTOMER, "Yes please", kind=kind, target=offer, selected_id="yes")
    event = message(fake)
    assert event.text == "Yes please"
    assert event.quoted_native_id == offer
    assert not event.is_note


def test_unknown_type_is_a_note(fake: FakeGreenApi) -> None:
    fake.customer_writes(CUSTOMER, kind="raw", message_data={"typeMessage": "hologramMessage"})
    event = message(fake)
    assert event.is_note
    assert "hologramMessage" in event.text


def test_group_messages_only_when_enabled(fake: FakeGreenApi) -> None:
    fake.customer_writes(
        GROUP, "hi all", sender="79005556677", sender_name="Petr", chat_name="Team"
    )
    assert parse_notification(last_body(fake), options(fake)) == []
    event = message(fake, groups=True)
    assert event.is_group
    assert event.conversation_id == GROUP
    assert event.conversation_name == "Team"
    assert (event.sender.id, event.sender.name, event.sender.phone) == (
        "79005556677@c.us",
        "Petr",
        "79005556677",
    )


def test_private_ids_are_not_phones(fake: FakeGreenApi) -> None:
    fake.customer_writes(GROUP, "hi", sender="2519000000001@lid", sender_name="Lid")
    event = message(fake, groups=True)
    assert event.sender.id == "2519000000001@lid"
    assert event.sender.phone is None


def test_status_broadcast_is_ignored(fake: FakeGreenApi) -> None:
    fake.customer_writes("status@broadcast", "story", sender=CUSTOMER)
    assert parse_notification(last_body(fake), options(fake, groups=True)) == []


def test_own_api_sends_never_loop(fake: FakeGreenApi) -> None:
    fake.send(
        "sendMessage",
        CHAT,
        {},
        {"typeMessage": "textMessage", "textMessageData": {"textMessage": "x"}},
        text="x",
    )
    kinds = [b["typeWebhook"] for b in fake.pending_webhooks]
    assert kinds == ["outgoingAPIMessageReceived", "outgoingMessageStatus"]
    echo = fake.pending_webhooks[0]
    assert parse_notification(echo, options(fake, mirror_phone_messages=True)) == []


def test_phone_messages_mirrored_as_notes_when_enabled(fake: FakeGreenApi) -> None:
    id_message = fake.phone_writes(CUSTOMER, "typed on the phone")
    body = last_body(fake)
    assert parse_notification(body, options(fake)) == []
    [inbound] = parse_notification(body, options(fake, mirror_phone_messages=True))
    assert inbound.dedupe_key.endswith(f":{CHAT}:{id_message}:outgoingMessageReceived")
    event = inbound.event
    assert isinstance(event, Message)
    assert (event.text, event.is_note, event.from_me, event.sender.id) == (
        "typed on the phone",
        True,
        True,
        fake.me_id,
    )


def test_calls_become_notes(fake: FakeGreenApi) -> None:
    fake.customer_calls(CUSTOMER, "offer")
    first = one(fake)
    fake.customer_calls(CUSTOMER, "missed")
    second = one(fake)
    assert isinstance(first.event, Message) and isinstance(second.event, Message)
    assert first.event.is_note and "incoming" in first.event.text
    assert "missed" in second.event.text
    assert first.event.conversation_id == CHAT
    assert first.dedupe_key != second.dedupe_key
    fake.customer_calls(CUSTOMER, "hangUp")
    assert parse_notification(last_body(fake), options(fake)) == []


def test_magic_failures_come_as_statuses(fake: FakeGreenApi) -> None:
    chat = f"{magic_phone(Magic.NO_ACCOUNT)}@c.us"
    fake.send(
        "sendMessage",
        chat,
        {},
        {"typeMessage": "textMessage", "textMessageData": {"textMessage": "x"}},
        text="x",
    )
    update = one(fake).event
    assert isinstance(update, StatusUpdate)
    assert (update.status, update.error_code, update.conversation_id) == (
        DeliveryStatus.FAILED,
        "noAccount",
        chat,
    )
    assert update.error_text == "the recipient has no WhatsApp account"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ([], 400, "JSON object"),
        ({"instanceData": SPEC_INSTANCE}, 400, "typeWebhook"),
        ({"typeWebhook": "incomingMessageReceived"}, 400, "instanceData"),
        (
            {"typeWebhook": "incomingMessageReceived", "instanceData": {"idInstance": 1}},
            422,
            "id_instance",
        ),
        (
            {"typeWebhook": "incomingMessageReceived", "instanceData": SPEC_INSTANCE},
            422,
            "idMessage",
        ),
        (
            {
                "typeWebhook": "incomingMessageReceived",
                "instanceData": SPEC_INSTANCE,
                "idMessage": "A",
                "senderData": {"chatId": CHAT},
                "messageData": {"typeMessage": "textMessage"},
            },
            422,
            "textMessageData",
        ),
    ],
)
def test_bodies_green_never_sends_are_refused(body: Any, status: int, words: str) -> None:
    with pytest.raises(Unparsable) as caught:
        parse_notification(body, SPEC)
    assert caught.value.status == status
    assert words in str(caught.value)


def test_unknown_notification_types_are_dropped() -> None:
    body = {"typeWebhook": "deviceInfo", "instanceData": SPEC_INSTANCE, "timestamp": 1}
    assert parse_notification(body, SPEC) == []
