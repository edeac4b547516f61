"""An outgoing message as the Chat API calls that send it (spec 1.2), without sending.

One normalized message may need several calls (a text and two files, a location and a
text); each is a `Part`. The first part carries the quote and gives the message its id.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import Attachment, Contact, Message, Outgoing, PermanentError, clean_filename
from gateway_chatapi.phones import destination

# WhatsApp cuts captions longer than this; such a text goes as its own message.
MAX_CAPTION = 1024
_DEFAULT_EXTENSIONS = {
    "image": ".jpg",
    "video": ".mp4",
    "audio": ".mp3",
    "voice": ".ogg",
    "sticker": ".webp",
}


@dataclass(frozen=True, slots=True)
class Part:
    """One send call: the method and its JSON body (recipient included)."""

    method: str
    body: dict[str, Any]


def plan_send(item: Outgoing) -> list[Part]:
    """The calls that deliver `item`; raises `PermanentError` for what cannot be sent."""
    event = item.event
    if not isinstance(event, Message):
        raise PermanentError(f"Chat API cannot {event.kind} a sent message", code="unsupported")
    try:
        address: dict[str, Any] = dict(destination(event.conversation_id))
    except ValueError as exc:
        raise PermanentError(str(exc), code="bad_recipient") from None

    parts: list[Part] = []
    text = event.text.strip()
    attachments = event.attachments
    caption_holder = len(attachments) == 1 and text and len(text) <= MAX_CAPTION
    if text and not caption_holder:
        parts.append(Part("sendMessage", {**address, "body": event.text}))
    for attachment in attachments:
        body = {**address, "body": attachment.url, "filename": _filename(attachment)}
        caption = attachment.caption or (event.text if caption_holder else None)
        if caption:
            body["caption"] = caption
        parts.append(Part("sendFile", body))
    if event.location is not None:
        where = event.location
        label = "\n".join(x for x in (where.name, where.address) if x)
        parts.append(
            Part(
                "sendLocation",
                {**address, "lat": where.latitude, "lng": where.longitude, "address": label},
            )
        )
    for contact in event.contacts:
        parts.append(Part("sendVCard", {**address, "vcard": contact.vcard or _vcard(contact)}))
    if not parts:
        raise PermanentError("the message has nothing Chat API can send", code="empty")
    if item.quoted_target_id and parts[0].method in ("sendMessage", "sendFile"):
        parts[0].body["quotedMsgId"] = item.quoted_target_id
    return parts


def _filename(attachment: Attachment) -> str:
    """Chat API needs a file name with an extension; it decides how the file is shown."""
    name = clean_filename(attachment.filename) or clean_filename(
        unquote(urlsplit(attachment.url).path.rsplit("/", 1)[-1])
    )
    if name:
        stem, _, extension = name.rpartition(".")
        if stem and extension:
            return name
    guessed = mimetypes.guess_extension(attachment.mime_type) if attachment.mime_type else None
    return (name or attachment.kind) + (guessed or _DEFAULT_EXTENSIONS.get(attachment.kind, ".bin"))


def _vcard(contact: Contact) -> str:
    name = " ".join(contact.name.split())  # a line break would end the field early
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"FN:{name}"]
    for phone in contact.phones:
        digits = phone.lstrip("+")
        lines.append(f"TEL;type=CELL;waid={digits}:+{digits}")
    lines.append("END:VCARD")
    return "\n".join(lines)
