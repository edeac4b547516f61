"""A normalized `Message` -> the Cloud API messages that carry it.

WhatsApp takes one thing per message, so a message with text and files becomes several
*parts*: the text rides as the caption of the first file when it fits (1024 characters),
otherwise it goes first, split at 4096 characters. Only the first part quotes. Files whose
type or size WhatsApp refuses for their kind go as documents (a GIF, a 9 MB photo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import Attachment, Contact, Location, Message, PermanentError

JSON = Any
MB = 1024 * 1024
MAX_TEXT = 4096
MAX_CAPTION = 1024
# Meta's "supported media types": accepted mime types and size limit per message type.
ACCEPTED = {
    "image": frozenset({"image/jpeg", "image/png"}),
    "video": frozenset({"video/mp4", "video/3gpp"}),
    "audio": frozenset({"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}),
    "sticker": frozenset({"image/webp"}),
}
MAX_BYTES = {
    "image": 5 * MB,
    "video": 16 * MB,
    "audio": 16 * MB,
    "sticker": 500 * 1024,
    "document": 100 * MB,
}
_TYPE_OF_KIND = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "voice": "audio",
    "sticker": "sticker",
    "document": "document",
    "file": "document",
}
_CAPTIONED = frozenset({"image", "video", "document"})


@dataclass(frozen=True, slots=True)
class Part:
    """One Cloud API message of a normalized one; `type` is the message type."""

    type: str
    text: str | None = None
    attachment: Attachment | None = None
    location: Location | None = None
    contacts: tuple[Contact, ...] = ()


def plan_parts(message: Message) -> list[Part]:
    text = message.text.strip()
    files = list(message.attachments)
    caption_target = next(
        (i for i, a in enumerate(files) if _TYPE_OF_KIND.get(a.kind) in _CAPTIONED), None
    )
    parts: list[Part] = []
    use_caption = bool(text) and caption_target is not None and len(text) <= MAX_CAPTION
    if text and not use_caption:
        # The core already split texts over `max_text_length` (MAX_TEXT) into messages.
        parts.append(Part("text", text=text))
    for index, attachment in enumerate(files):
        caption = text if use_caption and index == caption_target else attachment.caption
        parts.append(
            Part(
                _TYPE_OF_KIND.get(attachment.kind, "document"), text=caption, attachment=attachment
            )
        )
    if message.location is not None:
        parts.append(Part("location", location=message.location))
    if message.contacts:
        parts.append(Part("contacts", contacts=message.contacts))
    return parts


def media_type(part_type: str, mime_type: str | None, size: int | None) -> str:
    """The message type a file can go as: its own, or `document` when WhatsApp won't take it."""
    if part_type == "document":
        kind = "document"
    else:
        base = (mime_type or "").split(";", 1)[0].strip().lower()
        accepted = ACCEPTED.get(part_type, frozenset())
        kind = part_type if not base or base in accepted else "document"
        if size is not None and size > MAX_BYTES[kind]:
            kind = "document"
    if size is not None and size > MAX_BYTES["document"]:
        raise PermanentError(
            f"the file is {size} bytes; WhatsApp takes at most {MAX_BYTES['document']} bytes",
            code="file_too_large",
        )
    return kind


def media_object(
    kind: str, part: Part, *, link: str | None = None, media_id: str | None = None
) -> dict[str, JSON]:
    obj: dict[str, JSON] = {"id": media_id} if media_id is not None else {"link": link}
    if kind in _CAPTIONED and part.text:
        obj["caption"] = part.text[:MAX_CAPTION]
    if kind == "document":
        attachment = part.attachment
        name = attachment.filename if attachment else None
        obj["filename"] = (
            name or (filename_from_url(attachment.url) if attachment else None) or "file"
        )
    return obj


def filename_from_url(url: str) -> str | None:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name or None


def location_object(location: Location) -> dict[str, JSON]:
    obj: dict[str, JSON] = {"latitude": location.latitude, "longitude": location.longitude}
    if location.name:
        obj["name"] = location.name
    if location.address:
        obj["address"] = location.address
    return obj


def contacts_object(contacts: tuple[Contact, ...]) -> list[dict[str, JSON]]:
    cards = []
    for contact in contacts:
        first = contact.name.split()[0] if contact.name.split() else contact.name
        card: dict[str, JSON] = {"name": {"formatted_name": contact.name, "first_name": first}}
        if contact.phones:
            card["phones"] = [{"phone": phone} for phone in contact.phones]
        cards.append(card)
    return cards


def message_payload(to: str, msg_type: str, obj: JSON, quoted_id: str | None) -> dict[str, JSON]:
    payload: dict[str, JSON] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": msg_type,
        msg_type: obj,
    }
    if quoted_id:
        payload["context"] = {"message_id": quoted_id}
    return payload


def template_object(name: str, language: str, text: str | None) -> dict[str, JSON]:
    """A template message; `text` (if given) fills its single body parameter."""
    obj: dict[str, JSON] = {"name": name, "language": {"code": language, "policy": "deterministic"}}
    if text:
        # Template parameters may not hold line breaks, tabs or runs of spaces.
        flat = " ".join(text.split())
        obj["components"] = [{"type": "body", "parameters": [{"type": "text", "text": flat}]}]
    return obj
