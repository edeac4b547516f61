"""A normalized message -> the GREEN-API sends that carry it (spec 2.2).

One message may need several sends: GREEN takes one file per message, shows a caption only
on images and videos, and has separate methods for locations and contacts. The parts are
planned here without I/O; the provider sends them in order and remembers which went out,
so a retry after a failure in the middle resends nothing twice.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import (
    Attachment,
    Contact,
    Delete,
    Edit,
    Message,
    PermanentError,
    national_to_international,
)

#: WhatsApp's limit per text as GREEN documents it (`max_text_length`: the core splits).
MAX_TEXT = 20_000
_CAPTIONED = ("image", "video")
_DEFAULT_EXT = {
    "image": ".jpg",
    "video": ".mp4",
    "audio": ".mp3",
    "voice": ".ogg",
    "sticker": ".webp",
    "document": ".bin",
    "file": ".bin",
}
# mimetypes' first guesses are odd for a few common types (".jpe", ".oga").
_PREFERRED_EXT = {"image/jpeg": ".jpg", "audio/ogg": ".ogg", "audio/mpeg": ".mp3"}
_HAS_EXT = re.compile(r"\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True, slots=True)
class Part:
    """One API call: the method and its JSON body (without `chatId`, added at send time)."""

    method: str
    payload: dict[str, Any] = field(default_factory=dict)


def plan(event: Message | Edit | Delete, quoted_id: str | None = None) -> list[Part]:
    """The sends for `event`, the first one quoting `quoted_id` when given."""
    if not isinstance(event, Message):
        # Edits and deletes are calls of their own (`editMessage`, `deleteMessage`).
        raise PermanentError(f"a {event.kind} is not planned as a send", code="unsupported")
    parts: list[Part] = []
    text = event.text.strip()
    first = event.attachments[0] if event.attachments else None
    caption_fits = first is not None and first.kind in _CAPTIONED and len(text) <= MAX_TEXT
    if text and not caption_fits:
        # The core already split texts over `max_text_length` (MAX_TEXT) into messages.
        parts.append(Part("sendMessage", {"message": text}))
    for index, attachment in enumerate(event.attachments):
        caption = text if index == 0 and caption_fits else (attachment.caption or "")
        parts.append(_file(attachment, caption))
    if event.location is not None:
        loc = event.location
        payload: dict[str, Any] = {"latitude": loc.latitude, "longitude": loc.longitude}
        if loc.name:
            payload["nameLocation"] = loc.name
        if loc.address:
            payload["address"] = loc.address
        parts.append(Part("sendLocation", payload))
    parts += [_contact(contact) for contact in event.contacts]
    if not parts:
        raise PermanentError(
            "the message has no text, file, location or contact to send", code="empty_message"
        )
    if quoted_id:
        parts[0].payload["quotedMessageId"] = quoted_id
    return parts


def _file(attachment: Attachment, caption: str) -> Part:
    payload: dict[str, Any] = {"urlFile": attachment.url, "fileName": file_name(attachment)}
    if caption:
        payload["caption"] = caption
    return Part("sendFileByUrl", payload)


def file_name(attachment: Attachment) -> str:
    """A name with an extension: GREEN decides how a file is shown by its extension."""
    name = (attachment.filename or "").strip().replace("/", "_")
    if not name:
        path = unquote(urlsplit(attachment.url).path)
        name = posixpath.basename(path)
    if _HAS_EXT.search(name):
        return name
    mime = (attachment.mime_type or "").split(";")[0].strip().lower()
    ext = _PREFERRED_EXT.get(mime) or (mimetypes.guess_extension(mime) if mime else None)
    return (name or attachment.kind) + (ext or _DEFAULT_EXT[attachment.kind])


def _contact(contact: Contact) -> Part:
    for phone in contact.phones:
        digits = re.sub(r"\D", "", phone)
        if 5 <= len(digits) <= 15:
            first, _, last = contact.name.partition(" ")
            card: dict[str, Any] = {
                "phoneContact": int(national_to_international(digits)),
                "firstName": first or contact.name,
            }
            if last:
                card["lastName"] = last
            return Part("sendContact", {"contact": card})
    # No number WhatsApp could attach: the card is still worth showing as text.
    return Part("sendMessage", {"message": f"👤 {contact.name}\n{contact.vcard or ''}".strip()})
