"""Bitrix24 events (spec section 5) as normalized gateway events."""

from __future__ import annotations

from urllib.parse import urlencode

from gateway_bitrix24.events import (
    MessageParser,
    PortalEvent,
    connector_and_line,
    deleted_line,
    read_event,
)
from gateway_bitrix24.forms import parse_form
from gateway_bitrix24.records import PortalRecord

from gateway.models import Delete, Edit, Message

MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
RECORD = PortalRecord(
    member_id=MEMBER,
    client_endpoint="https://acme.bitrix24.com/rest/",
    server_endpoint="https://oauth.bitrix.info/rest/",
    access_token="a",
    refresh_token="r",
    application_token="t",
)


def event(name: str, data: list[tuple[str, str]]) -> PortalEvent:
    pairs = [("event", name), *data, ("ts", "1773759161"), ("auth[member_id]", MEMBER)]
    return read_event(parse_form(urlencode(pairs).encode()))


def parser(strip: bool = False, signature: bool = True) -> MessageParser:
    return MessageParser(RECORD, 107, "acme_wa", strip, signature)


MESSAGE_ADD = [
    ("data[CONNECTOR]", "acme_wa"),
    ("data[LINE]", "107"),
    ("data[MESSAGES][0][im][chat_id]", "1807"),
    ("data[MESSAGES][0][im][message_id]", "86497"),
    ("data[MESSAGES][0][message][user_id]", "27"),
    ("data[MESSAGES][0][message][text]", "[b]Klaus Weber:[/b][br] Hello! See [b]attachment[/b]"),
    ("data[MESSAGES][0][message][files][0][name]", "price.pdf"),
    ("data[MESSAGES][0][message][files][0][type]", "file"),
    ("data[MESSAGES][0][message][files][0][link]", "https://acme.bitrix24.com/~Ab12C"),
    ("data[MESSAGES][0][message][files][0][size]", "48213"),
    ("data[MESSAGES][0][message][files][1][name]", "photo.jpg"),
    ("data[MESSAGES][0][message][files][1][type]", "image"),
    ("data[MESSAGES][0][message][files][1][link]", "https://acme.bitrix24.com/~Zz9#img.jpg"),
    ("data[MESSAGES][0][message][files][1][downloadLink]", "/rest/download.json?token=F9"),
    ("data[MESSAGES][0][message][files][1][mime]", "image/jpeg"),
    ("data[MESSAGES][0][chat][id]", "15557654321"),
]


def test_operator_message_from_the_spec_transcript() -> None:
    [inbound] = parser().parse(event("ONIMCONNECTORMESSAGEADD", MESSAGE_ADD))
    message = inbound.event
    assert isinstance(message, Message)
    assert inbound.dedupe_key == f"bitrix24:{MEMBER}:86497"
    assert inbound.target == f"{MEMBER}/107"
    assert (message.conversation_id, message.native_id) == ("15557654321", "86497")
    assert message.text == "*Klaus Weber:*\nHello! See *attachment*"
    assert (message.sender.id, message.sender.name) == ("bitrix24:27", "Klaus Weber")
    assert message.timestamp == 1773759161
    document, photo = message.attachments
    assert (document.kind, document.url, document.size) == (
        "document",
        "https://acme.bitrix24.com/~Ab12C",
        48213,
    )
    # downloadLink first, made absolute on the stored portal; no #img fragment anywhere
    assert (photo.kind, photo.url, photo.mime_type) == (
        "image",
        "https://acme.bitrix24.com/rest/download.json?token=F9",
        "image/jpeg",
    )
    assert message.extra["b24"] == {
        "member_id": MEMBER,
        "line": 107,
        "connector": "acme_wa",
        "im": {"chat_id": 1807, "message_id": 86497},
        "chat_id": "15557654321",
        "user_id": 27,
    }


def test_signature_stripped_or_not_parsed_at_all() -> None:
    [stripped] = parser(strip=True).parse(event("ONIMCONNECTORMESSAGEADD", MESSAGE_ADD))
    assert isinstance(stripped.event, Message)
    assert stripped.event.text == "Hello! See *attachment*"
    assert stripped.event.sender.name == "Klaus Weber"
    [raw] = parser(signature=False).parse(event("ONIMCONNECTORMESSAGEADD", MESSAGE_ADD))
    assert isinstance(raw.event, Message) and raw.event.sender.name is None
    assert raw.event.text.startswith("*Klaus Weber:*")  # just bold text then


def test_every_item_is_its_own_event_and_broken_items_are_skipped() -> None:
    data = [
        ("data[CONNECTOR]", "acme_wa"),
        ("data[LINE]", "107"),
        ("data[MESSAGES][0][im][message_id]", "1"),
        ("data[MESSAGES][0][message][text]", "one"),
        ("data[MESSAGES][0][chat][id]", "c1"),
        ("data[MESSAGES][1][im][message_id]", "2"),
        ("data[MESSAGES][1][message][text]", "two"),
        ("data[MESSAGES][1][chat][id]", "c2"),
        ("data[MESSAGES][2][message][text]", "no ids"),
        ("data[MESSAGES][3][im][message_id]", "4"),
        ("data[MESSAGES][3][chat][id]", "c4"),
    ]
    p = parser()
    parsed = p.parse(event("ONIMCONNECTORMESSAGEADD", data))
    assert [(e.event.conversation_id, getattr(e.event, "text", "")) for e in parsed] == [
        ("c1", "one"),
        ("c2", "two"),
    ]
    assert len(p.skipped) == 2


def test_update_and_delete_shapes() -> None:
    common = [
        ("data[CONNECTOR]", "acme_wa"),
        ("data[LINE]", "107"),
        ("data[MESSAGES][0][im][chat_id]", "1807"),
        ("data[MESSAGES][0][im][message_id]", "86501"),
        ("data[MESSAGES][0][chat][id]", "79991234567"),
    ]
    update = [
        *common,
        ("data[MESSAGES][0][message][id][0]", "wamid.A"),
        ("data[MESSAGES][0][message][text]", "[b]Klaus Weber:[/b][br] corrected"),
    ]
    [edit] = parser(strip=True).parse(event("ONIMCONNECTORMESSAGEUPDATE", update))
    assert edit.event == Edit("79991234567", "86501", "corrected", extra=edit.event.extra)
    assert edit.dedupe_key.startswith(f"bitrix24:{MEMBER}:86501:edit:")
    [again] = parser(strip=True).parse(event("ONIMCONNECTORMESSAGEUPDATE", update))
    assert again.dedupe_key == edit.dedupe_key
    deletes = [*common, ("data[MESSAGES][0][message][id]", "wamid.A")]
    [delete] = parser().parse(event("ONIMCONNECTORMESSAGEDELETE", deletes))
    assert isinstance(delete.event, Delete) and delete.event.native_id == "86501"
    assert delete.dedupe_key == f"bitrix24:{MEMBER}:86501:delete"


def test_lifecycle_event_shapes() -> None:
    status = event(
        "ONIMCONNECTORSTATUSDELETE", [("data[connector]", "ACME_WA"), ("data[line]", "107")]
    )
    assert connector_and_line(status) == ("acme_wa", 107)
    assert deleted_line(event("ONIMCONNECTORLINEDELETE", [("data", "107")])) == 107
    uninstall = event("onappuninstall", [("data[CLEAN]", "1")])
    assert uninstall.name == "ONAPPUNINSTALL" and uninstall.member_id == MEMBER
    assert uninstall.application_token is None
