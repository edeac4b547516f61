"""Chat API items (`messages[]`, `ack[]`, instance status) -> normalized events.

Pure functions: the webhook handler and the `/messages` refill share them, so one message
has one dedupe key and one shape whichever way it came. Field meanings are spec section 1.5;
types the spec marks [U] are handled leniently (a readable note rather than nothing).
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import (
    AccountState,
    AccountStatus,
    Attachment,
    AttachmentKind,
    Contact,
    DeliveryStatus,
    Location,
    Message,
    Sender,
    StatusUpdate,
    clean_filename,
)
from gateway_chatapi.phones import is_broadcast, is_group, phone_of

MEDIA_KINDS: dict[str, AttachmentKind] = {
    "image": "image",
    "video": "video",
    "document": "document",
    "audio": "audio",
    "ptt": "voice",
    "sticker": "sticker",
}
# Replies to buttons and lists carry the chosen text in `body` [U].
TEXT_TYPES = frozenset({"chat", "buttons_response", "list_response"})
# Service messages WhatsApp Web shows as grey lines; nothing a person wrote [U].
SERVICE_TYPES = frozenset({"e2e_notification", "notification_template", "gp2", "protocol"})
ACK_STATUSES: dict[str, DeliveryStatus] = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "viewed": DeliveryStatus.READ,
    "read": DeliveryStatus.READ,
    "played": DeliveryStatus.READ,
}
_VCARD = re.compile(r"BEGIN:VCARD.*?END:VCARD", re.DOTALL | re.IGNORECASE)
_MAX_NOTE_BODY = 500


class BadItem(ValueError):
    """An item without the fields every item has (`id`, `chatId`); skipped with a warning."""


@dataclass(frozen=True, slots=True)
class InboundItem:
    """A parsed `messages[]` item; `message` is None when it is not for the CRM at all."""

    id: str
    chat_id: str
    number: int | None
    from_me: bool
    message: Message | None


def message_key(instance_id: str, message_id: str) -> str:
    return f"chatapi:{instance_id}:{message_id}"


def ack_key(instance_id: str, message_id: str, status: str) -> str:
    return f"chatapi:{instance_id}:{message_id}:{status}"


def parse_message(item: Any, *, groups: bool) -> InboundItem:
    """One `messages[]` item; phone-typed (`fromMe`) ones come back as `from_me` notes.

    Whether a `fromMe` item is the echo of the gateway's own send is for the caller to
    decide (it needs the id map); the note is built either way.
    """
    if not isinstance(item, Mapping):
        raise BadItem("a messages[] item is not an object")
    msg_id, chat_id = item.get("id"), item.get("chatId")
    if not isinstance(msg_id, str) or not msg_id or not isinstance(chat_id, str) or not chat_id:
        raise BadItem("a messages[] item has no id or chatId")
    number = item.get("messageNumber")
    number = number if isinstance(number, int) and not isinstance(number, bool) else None
    from_me = _flag(item.get("fromMe"))
    skip = InboundItem(msg_id, chat_id, number, from_me, None)
    if is_broadcast(chat_id) or (is_group(chat_id) and not groups):
        return skip
    kind = str(item.get("type") or "chat")
    if kind in SERVICE_TYPES:
        return skip
    message = _content(item, kind, msg_id, chat_id, from_me)
    if from_me:
        # Typed on the business phone: the destination marks it in its own words.
        message = replace(message, is_note=True, from_me=True)
    return InboundItem(msg_id, chat_id, number, from_me, message)


def _content(
    item: Mapping[str, Any], kind: str, msg_id: str, chat_id: str, from_me: bool
) -> Message:
    body = item.get("body")
    body = body if isinstance(body, str) else ""
    caption = _text(item.get("caption"))
    group = is_group(chat_id)
    # In a person's chat the author is the chat itself, unless the business wrote it.
    author = _text(item.get("author")) or (None if group or from_me else chat_id)
    # Built once: a text message (most of them) takes its text in the same construction.
    fields: dict[str, Any] = dict(
        conversation_id=chat_id,
        native_id=msg_id,
        sender=Sender(
            id=author or ("me" if from_me else chat_id),
            name=_text(item.get("senderName")),
            phone=phone_of(author),
            # Not in Chat API's documented model; taken when an instance sends it [U].
            avatar_url=None if from_me else _url(item.get("senderAvatar")),
        ),
        quoted_native_id=_text(item.get("quotedMsgId")),
        quoted_text=_quoted_text(item),
        forwarded=_flag(item.get("isForwarded")),
        is_group=group,
        conversation_name=_text(item.get("chatName")),
        timestamp=float(item["time"]) if isinstance(item.get("time"), int | float) else None,
    )
    if kind in TEXT_TYPES:
        return Message(**fields, text=body)
    base = Message(**fields)
    if kind in MEDIA_KINDS:
        if not body.startswith(("https://", "http://")):
            return _note(base, f"[{kind} without a downloadable file]", caption)
        filename = _filename(body)
        mime = mimetypes.guess_type(filename)[0] if filename else None
        attachment = Attachment(MEDIA_KINDS[kind], body, mime_type=mime, filename=filename)
        # The caption is the message's text; repeating it on the attachment would show it twice.
        return replace(base, text=caption or "", attachments=(attachment,))
    if kind == "location":
        location = _location(item, body, caption)
        if location is None:
            return _note(base, "📍 location (unreadable)", body)
        return replace(base, location=location)
    if kind in ("vcard", "multi_vcard"):
        contacts = _contacts(body)
        if not contacts:
            return _note(base, "👤 contact card (unreadable)", None)
        return replace(base, contacts=contacts)
    if kind == "call_log":
        who = base.sender.name or base.sender.phone or chat_id
        return _note(base, f"📞 WhatsApp call from {who}", None)
    if kind == "revoked":
        return _note(base, "🗑 The sender deleted a message", None)
    shown = body if body and not body.startswith(("http://", "https://", "data:")) else caption
    return _note(base, f"[unsupported WhatsApp message type {kind!r}]", shown)


def _note(base: Message, text: str, detail: str | None) -> Message:
    if detail:
        detail = detail if len(detail) <= _MAX_NOTE_BODY else detail[:_MAX_NOTE_BODY] + "..."
        text = f"{text}: {detail}"
    return replace(base, text=text, is_note=True)


def _quoted_text(item: Mapping[str, Any]) -> str | None:
    if not _text(item.get("quotedMsgId")):
        return None
    body = _text(item.get("quotedMsgBody"))
    kind = _text(item.get("quotedMsgType")) or "chat"
    if kind in TEXT_TYPES:
        return body
    if kind == "location":
        return "[location]"
    # For files the body is a download URL: a label reads better than a link.
    return f"[{kind}]"


def _filename(url: str) -> str | None:
    return clean_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))


def _location(item: Mapping[str, Any], body: str, caption: str | None) -> Location | None:
    lat, lng = item.get("lat"), item.get("lng")
    if not (isinstance(lat, int | float) and isinstance(lng, int | float)):
        parts = body.split(";")
        if len(parts) != 2:
            return None
        try:
            lat, lng = float(parts[0]), float(parts[1])
        except ValueError:
            return None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    return Location(float(lat), float(lng), address=caption)


def _contacts(body: str) -> tuple[Contact, ...]:
    cards: list[str] = []
    text = body.strip()
    if text.startswith("["):
        # multi_vcard may come as a JSON list of cards [U].
        try:
            listed = json.loads(text)
        except (ValueError, RecursionError):
            listed = None
        if isinstance(listed, list):
            cards = [c for c in listed if isinstance(c, str)]
    if not cards:
        cards = _VCARD.findall(text)
    return tuple(contact for card in cards if (contact := parse_vcard(card)) is not None)


def parse_vcard(card: str) -> Contact | None:
    """Name and phone numbers of a vCard; None when it has neither."""
    name: str | None = None
    phones: list[str] = []
    for raw in card.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        head, _, value = line.partition(":")
        field = head.split(";", 1)[0].upper()
        if field == "FN" and value.strip():
            name = value.strip()
        elif field == "N" and name is None and value.strip(";"):
            name = " ".join(p for p in reversed(value.split(";")[:2]) if p).strip() or None
        elif field == "TEL":
            waid = re.search(r"waid=(\d+)", head, re.IGNORECASE)
            number = waid.group(1) if waid else re.sub(r"[^\d+]", "", value)
            if number:
                phones.append(number)
    if name is None and not phones:
        return None
    return Contact(name=name or phones[0], phones=tuple(phones), vcard=card.strip())


def parse_ack(item: Any) -> tuple[str, StatusUpdate] | None:
    """An `ack[]` item as (Chat API status word, StatusUpdate); None for unknown statuses."""
    if not isinstance(item, Mapping):
        raise BadItem("an ack[] item is not an object")
    msg_id, word = item.get("id"), item.get("status")
    if not isinstance(msg_id, str) or not msg_id or not isinstance(word, str):
        raise BadItem("an ack[] item has no id or status")
    status = ACK_STATUSES.get(word.lower())
    if status is None:
        return None
    return word.lower(), StatusUpdate(
        native_id=msg_id, status=status, conversation_id=_text(item.get("chatId"))
    )


def account_state(data: Mapping[str, Any], qr: str | None = None) -> AccountState:
    """`/status` (or an instance-status webhook) as an `AccountState`."""
    raw = data.get("accountStatus")
    status = str(raw).strip().lower() if raw is not None else ""
    info = data.get("statusData")
    info = info if isinstance(info, Mapping) else {}
    substatus = str(info.get("substatus") or "")
    words = [info[k] for k in ("title", "msg", "submsg") if isinstance(info.get(k), str)]
    detail = " ".join(w for w in words if w) or (f"{status} ({substatus})" if substatus else status)
    if status == "authenticated":
        # Logged in, but the phone or another WhatsApp Web session may be in the way.
        if substatus in ("offline", "phone", "computer", "timeout", "expired"):
            return AccountState(AccountStatus.DISCONNECTED, detail=detail)
        return AccountState(AccountStatus.CONNECTED, detail=detail)
    if status == "got qr code":
        code = qr or _text(data.get("qrCode"))
        return AccountState(AccountStatus.NEEDS_QR, detail=detail, qr=code)
    if status in ("loading", "init"):
        return AccountState(AccountStatus.STARTING, detail=detail)
    if status in ("not_paid", "not paid", "unpaid"):
        return AccountState(AccountStatus.UNPAID, detail=detail)
    return AccountState(AccountStatus.UNKNOWN, detail=detail or "no accountStatus in the answer")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value)
    return text if text.strip() else None


def _url(value: Any) -> str | None:
    text = _text(value)
    return text if text is not None and text.startswith(("https://", "http://")) else None


def _flag(value: Any) -> bool:
    """Chat API sends booleans as true/false, 1/0 or "1"/"0" depending on the field [P]."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)
