"""GREEN-API notification bodies: envelopes and every `messageData` shape the fake emits.

Field names follow spec 2.4 and GREEN's notification-format pages (incoming-message/*,
selected-buttons/*); the nested `messageData.messageData.contacts` of contactsArrayMessage
is copied from GREEN's own example on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.testing.fake_common import SAMPLE_NAMES, Clock, media_kind, mime_of, sample_bytes

InboundKind = Literal[
    "text",
    "extendedText",
    "image",
    "video",
    "document",
    "audio",
    "sticker",
    "location",
    "contact",
    "contacts",
    "reaction",
    "edited",
    "deleted",
    "poll",
    "pollUpdate",
    "buttonsResponse",
    "templateButtonsReply",
    "listResponse",
    "raw",
]
FILE_TYPES = {
    "image": "imageMessage",
    "video": "videoMessage",
    "document": "documentMessage",
    "audio": "audioMessage",
    "sticker": "stickerMessage",
}
TARGETED = ("reaction", "edited", "deleted", "pollUpdate")
TEXT_TYPES = ("textMessage", "extendedTextMessage", "quotedMessage")


def instance_data(id_instance: str, wid: str) -> dict[str, Any]:
    return {"idInstance": int(id_instance), "wid": wid, "typeInstance": "whatsapp"}


def notification(
    type_webhook: str, instance: dict[str, Any], timestamp: int, **fields: Any
) -> dict[str, Any]:
    """The envelope every notification shares, then the fields of its own type."""
    return {"typeWebhook": type_webhook, "instanceData": instance, "timestamp": timestamp, **fields}


def quota_data(used: int, total: int) -> dict[str, Any]:
    return {
        "method": "correspondents",
        "used": used,
        "total": total,
        "status": "CORRESPONDENTS_QUOTA_EXCEEDED",
        "description": "Monthly quota has been exceeded.",
    }


def sender_data(
    chat_id: str, sender: str, chat_name: str, sender_name: str, contact_name: str = ""
) -> dict[str, Any]:
    return {
        "chatId": chat_id,
        "sender": sender,
        "chatName": chat_name,
        "senderName": sender_name,
        "senderContactName": contact_name,
    }


def vcard(name: str, phone: str, org: str = "") -> str:
    parts = name.split(" ", 1)
    last = parts[1] if len(parts) > 1 else ""
    return (
        f"BEGIN:VCARD\nVERSION:3.0\nN:{last};{parts[0]};;;\nFN:{name}\n"
        + (f"ORG:{org}\n" if org else "")
        + f"TEL;type=CELL;waid={phone}:+{phone}\nEND:VCARD"
    )


def text_data(text: str) -> dict[str, Any]:
    return {"typeMessage": "textMessage", "textMessageData": {"textMessage": text}}


def extended_text_data(
    text: str, *, title: str = "", description: str = "", forwarded: bool = False
) -> dict[str, Any]:
    return {
        "typeMessage": "extendedTextMessage",
        "extendedTextMessageData": {
            "text": text,
            "description": description,
            "title": title,
            "previewType": "None",
            "jpegThumbnail": "",
            "forwardingScore": 1 if forwarded else 0,
            "isForwarded": forwarded,
        },
    }


def file_data(
    url: str, file_name: str, mime: str, caption: str, *, kind: str = "", forwarded: bool = False
) -> dict[str, Any]:
    kind = kind or media_kind(file_name)
    data: dict[str, Any] = {
        "downloadUrl": url,
        "caption": caption,
        "fileName": file_name,
        "jpegThumbnail": "",
        "mimeType": mime,
        "forwardingScore": 1 if forwarded else 0,
        "isForwarded": forwarded,
    }
    if kind == "sticker":
        data["isAnimated"] = False
    return {"typeMessage": FILE_TYPES[kind], "fileMessageData": data}


def location_data(
    latitude: float, longitude: float, name: str = "", address: str = "", forwarded: bool = False
) -> dict[str, Any]:
    return {
        "typeMessage": "locationMessage",
        "locationMessageData": {
            "nameLocation": name,
            "address": address,
            "jpegThumbnail": "",
            "latitude": latitude,
            "longitude": longitude,
            "forwardingScore": 1 if forwarded else 0,
            "isForwarded": forwarded,
        },
    }


def contact_data(name: str, card: str, forwarded: bool = False) -> dict[str, Any]:
    return {
        "typeMessage": "contactMessage",
        "contactMessageData": {
            "displayName": name,
            "vcard": card,
            "forwardingScore": 1 if forwarded else 0,
            "isForwarded": forwarded,
        },
    }


def quoted_object(
    stanza_id: str, participant: str, original: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The `quotedMessage` object: ids plus the quoted message's own fields (spec 2.4)."""
    quoted: dict[str, Any] = {"stanzaId": stanza_id, "participant": participant}
    if original is None:
        return quoted
    kind = str(original["typeMessage"])
    if kind == "textMessage":
        quoted.update(typeMessage=kind, textMessage=original["textMessageData"]["textMessage"])
    elif kind in ("extendedTextMessage", "quotedMessage"):
        quoted.update(
            typeMessage="extendedTextMessage",
            textMessage=original["extendedTextMessageData"]["text"],
        )
    elif "fileMessageData" in original:
        fmd = original["fileMessageData"]
        quoted["typeMessage"] = kind
        for key in ("downloadUrl", "caption", "fileName", "jpegThumbnail", "mimeType"):
            quoted[key] = fmd.get(key, "")
    elif kind == "locationMessage":
        lmd = dict(original["locationMessageData"])
        lmd.pop("forwardingScore", None)
        lmd.pop("isForwarded", None)
        quoted.update(typeMessage=kind, location=lmd)
    elif kind == "contactMessage":
        cmd = original["contactMessageData"]
        quoted.update(
            typeMessage=kind, contact={"displayName": cmd["displayName"], "vcard": cmd["vcard"]}
        )
    else:
        quoted["typeMessage"] = kind
    return quoted


def with_quote(
    data: dict[str, Any], text: str, quoted: dict[str, Any], *, legacy: bool
) -> dict[str, Any]:
    """Attach a reply in GREEN's new style (base type + object) or the deprecated one."""
    if data["typeMessage"] in TEXT_TYPES:
        ext = {"text": text, "stanzaId": quoted["stanzaId"], "participant": quoted["participant"]}
        data = {
            "typeMessage": "quotedMessage" if legacy else "extendedTextMessage",
            "extendedTextMessageData": ext,
        }
    return {**data, "quotedMessage": quoted}


def interactive_data(
    kind: str,
    *,
    text: str,
    target: str,
    target_participant: str,
    options: Sequence[str],
    multiple_answers: bool,
    votes: Mapping[str, Sequence[str]] | None,
    selected_id: str,
    selected_index: int,
    description: str,
) -> dict[str, Any]:
    """Reactions, edits, deletions, polls and button/list replies."""
    if kind == "reaction":
        return {
            "typeMessage": "reactionMessage",
            "extendedTextMessageData": {"text": text},
            "quotedMessage": {"stanzaId": target, "participant": target_participant},
        }
    if kind == "edited":
        return {
            "typeMessage": "editedMessage",
            "editedMessageData": {"textMessage": text, "stanzaId": target},
        }
    if kind == "deleted":
        return {"typeMessage": "deletedMessage", "deletedMessageData": {"stanzaId": target}}
    if kind == "poll":
        return {
            "typeMessage": "pollMessage",
            "pollMessageData": {
                "name": text,
                "options": [{"optionName": o} for o in options],
                "multipleAnswers": multiple_answers,
            },
        }
    if kind == "pollUpdate":
        return {
            "typeMessage": "pollUpdateMessage",
            "pollMessageData": {
                "stanzaId": target,
                "name": text,
                "votes": [
                    {"optionName": name, "optionVoters": list(voters)}
                    for name, voters in (votes or {}).items()
                ],
                "multipleAnswers": multiple_answers,
            },
        }
    if kind == "buttonsResponse":
        return {
            "typeMessage": "buttonsResponseMessage",
            "buttonsResponseMessage": {
                "stanzaId": target,
                "selectedButtonId": selected_id,
                "selectedButtonText": text,
            },
        }
    if kind == "templateButtonsReply":
        return {
            "typeMessage": "templateButtonsReplyMessage",
            "templateButtonReplyMessage": {
                "stanzaId": target,
                "selectedIndex": selected_index,
                "selectedId": selected_id,
                "selectedDisplayText": text,
            },
        }
    if kind == "listResponse":
        return {
            "typeMessage": "listResponseMessage",
            "listResponseMessage": {
                "stanzaId": target,
                "title": text,
                "listType": 1,
                "singleSelectReply": selected_id,
                "description": description,
            },
        }
    raise ValueError(f"unknown interactive kind {kind!r}")


def contacts_array_data(
    cards: Sequence[tuple[str, str]], forwarded: bool = False
) -> dict[str, Any]:
    return {
        "typeMessage": "contactsArrayMessage",
        "messageData": {
            "contacts": [{"displayName": name, "vcard": card} for name, card in cards],
            "forwardingScore": 1 if forwarded else 0,
            "isForwarded": forwarded,
        },
    }


def build_message_data(
    kind: str,
    seed: str,
    text: str,
    *,
    caption: str = "",
    file_name: str | None = None,
    content: bytes | None = None,
    mime_type: str | None = None,
    location: tuple[float, float] | None = None,
    location_name: str = "",
    address: str = "",
    contacts: Sequence[tuple[str, str]] = (),
    target: str | None = None,
    options: Sequence[str] = (),
    multiple_answers: bool = False,
    votes: Mapping[str, Sequence[str]] | None = None,
    selected_id: str = "",
    selected_index: int = 0,
    title: str = "",
    description: str = "",
    forwarded: bool = False,
    message_data: Mapping[str, Any] | None = None,
    put_media: Callable[[str, bytes, str], str],
    known: Mapping[str, Mapping[str, Any]],
    me_id: str,
) -> dict[str, Any]:
    """`messageData` for `customer_writes(kind=...)`; media go through `put_media`."""
    if kind == "text":
        return text_data(text)
    if kind == "extendedText":
        return extended_text_data(text, title=title, description=description, forwarded=forwarded)
    if kind in FILE_TYPES:
        name = file_name or SAMPLE_NAMES[kind]
        data = content if content is not None else sample_bytes(name, seed)
        mime = mime_type or mime_of(name)
        url = put_media(name, data, mime)
        return file_data(url, name, mime, caption or text, kind=kind, forwarded=forwarded)
    if kind == "location":
        lat, lng = location or (55.7558, 37.6173)
        return location_data(lat, lng, location_name, address or text, forwarded)
    if kind in ("contact", "contacts"):
        people = list(contacts) or [("Contact Person", "79001112233")]
        cards = [(name, vcard(name, phone)) for name, phone in people]
        if kind == "contact":
            return contact_data(cards[0][0], cards[0][1], forwarded)
        return contacts_array_data(cards, forwarded)
    if kind == "raw":
        if message_data is None:
            raise ValueError('kind="raw" needs message_data=')
        return dict(message_data)
    if target is None and (kind in TARGETED or kind.endswith(("Response", "Reply"))):
        raise ValueError(f"kind={kind!r} needs target= (the message it refers to)")
    original = known.get(target or "")
    return interactive_data(
        kind,
        text=text,
        target=target or "",
        target_participant=original["sender"] if original else me_id,
        options=options,
        multiple_answers=multiple_answers,
        votes=votes,
        selected_id=selected_id,
        selected_index=selected_index,
        description=description,
    )


def error_body(status: int, message: str, path: str, clock: Clock) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds")
    return {
        "statusCode": status,
        "timestamp": stamp.replace("+00:00", "Z"),
        "path": path,
        "message": message,
    }


def quota_body(method: str) -> dict[str, Any]:
    """HTTP 466 body (spec 2.6); note GREEN spells it QUOTE here, QUOTA in the webhook."""
    return {
        "invokeStatus": {
            "method": method,
            "used": 3,
            "total": 3,
            "status": "QUOTE_EXCEEDED",
            "description": "Monthly quota has been exceeded",
        },
        "correspondentsStatus": {
            "status": "CORRESPONDENTS_QUOTE_EXCEEDED",
            "description": "Monthly correspondents quota has been exceeded",
        },
    }
