"""Webhook payload pieces in Meta's shapes (spec section 3.3) and their wire encoding."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from .state import Media, SentMessage

JSON = Any

# Content for inbound media when a test gives none: the right magic bytes, so a gateway that
# sniffs file types sees what the mime type promises.
DEFAULT_MEDIA: dict[str, tuple[str, bytes]] = {
    "image": ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00fake-jpeg"),
    "video": ("video/mp4", b"\x00\x00\x00\x18ftypmp42fake-mp4"),
    "document": ("application/pdf", b"%PDF-1.4\n%fake-pdf\n%%EOF\n"),
    "audio": ("audio/mpeg", b"ID3\x04\x00\x00fake-mp3"),
    "voice": ("audio/ogg; codecs=opus", b"OggS\x00\x02fake-opus"),
    "sticker": ("image/webp", b"RIFF\x1c\x00\x00\x00WEBPVP8 fake-webp"),
}
MEDIA_KINDS = frozenset(DEFAULT_MEDIA)
INBOUND_KINDS = MEDIA_KINDS | {
    "text",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "request_welcome",
    "unsupported",
}


def inbound_object(
    kind: str,
    text: str,
    *,
    wa_id: str,
    media: Media | None,
    payload: JSON,
    reacted_id: str | None,
    filename: str | None,
) -> tuple[str, JSON]:
    """The wire `type` and its object for an inbound message of test-level `kind`.

    `payload` replaces the generated object (for media kinds it is merged into it, so the
    fake's media id and sha256 stay valid).
    """
    if kind in MEDIA_KINDS:
        assert media is not None
        wire = "audio" if kind == "voice" else kind
        obj: dict[str, JSON] = {}
        if text and kind in ("image", "video", "document"):
            obj["caption"] = text
        if kind == "document":
            obj["filename"] = filename or media.filename or "document.pdf"
        obj.update(mime_type=media.mime_type, sha256=media.sha256, id=media.id)
        if wire == "audio":
            obj["voice"] = kind == "voice"
        if kind == "sticker":
            obj["animated"] = False
        if isinstance(payload, Mapping):
            obj.update(payload)
        return wire, obj
    if payload is not None:
        return kind, payload
    if kind == "text":
        return kind, {"body": text}
    if kind == "location":
        location: dict[str, JSON] = {"latitude": 37.4847, "longitude": -122.1477}
        if text:
            location.update(name=text, address="1 Hacker Way, Menlo Park, CA 94025")
        return kind, location
    if kind == "contacts":
        name = text or "Jane Doe"
        card = {
            "name": {"formatted_name": name, "first_name": name.split()[0]},
            "phones": [{"phone": "+1 650-555-0199", "wa_id": "16505550199", "type": "CELL"}],
        }
        return kind, [card]
    if kind == "interactive":
        return kind, {"type": "button_reply", "button_reply": {"id": "btn-1", "title": text}}
    if kind == "button":
        return kind, {"payload": text, "text": text}
    if kind == "reaction":
        return kind, {"message_id": reacted_id, "emoji": text}
    if kind == "order":
        item = {
            "product_retailer_id": "sku-1",
            "quantity": 1,
            "item_price": 9.99,
            "currency": "USD",
        }
        return kind, {"catalog_id": "1520406528544320", "text": text, "product_items": [item]}
    if kind == "system":
        body = text or f"User {wa_id} changed their phone number"
        return kind, {"body": body, "wa_id": wa_id, "type": "user_changed_number"}
    return kind, None  # request_welcome and unsupported carry no object


def status_item(
    sent: SentMessage,
    status: str,
    *,
    now: float,
    conversation_id: str,
    errors: list[dict[str, JSON]] | None = None,
) -> dict[str, JSON]:
    """One `statuses[]` element for a message the gateway sent."""
    item: dict[str, JSON] = {
        "id": sent.id,
        "status": status,
        "timestamp": str(int(now)),
        "recipient_id": sent.wa_id,
    }
    callback_data = sent.request.get("biz_opaque_callback_data")
    if callback_data is not None:
        item["biz_opaque_callback_data"] = callback_data
    if errors:
        item["errors"] = errors
    elif status in ("sent", "delivered"):
        template = sent.type == "template"
        category = sent.category
        conversation: dict[str, JSON] = {"id": conversation_id, "origin": {"type": category}}
        if status == "sent":
            conversation["expiration_timestamp"] = str(int(sent.at) + 86400)
        item["conversation"] = conversation
        item["pricing"] = {
            "billable": template,
            "pricing_model": "PMP",
            "category": category,
            "type": "regular" if template else "free_customer_service",
        }
    return item


def encode(payload: JSON) -> bytes:
    """Serialize like Meta does: compact, non-ASCII as \\uXXXX and `/` escaped as `\\/`.

    The escaping makes the raw body differ from any re-serialization a gateway might do, so a
    gateway that verifies the HMAC over re-encoded JSON instead of the raw bytes fails here as
    it would against Meta.
    """
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header value for `body`."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_headers(app_secret: str, body: bytes) -> dict[str, str]:
    legacy = hmac.new(app_secret.encode(), body, hashlib.sha1).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "facebookexternalua",
        "X-Hub-Signature": f"sha1={legacy}",
        "X-Hub-Signature-256": signature(app_secret, body),
    }
