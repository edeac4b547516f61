"""One Cloud API `messages[]` item -> a normalized `Message`.

Every type becomes something an operator can read: content the model has a field for goes
there (attachments, location, contacts, the quoted id), and `text` carries only the
customer's own words (a caption, a location's comment): the destination renders the
structured parts itself, so a contact card or a place is shown once, not twice. What has no
field (interactive replies, orders, unsupported types) is rendered into `text`. Kinds that
are not the customer's own words (reactions, orders, system notices, unsupported types) are
marked `is_note`.
Media keep only their id here: `link` turns it into a gateway URL resolved when fetched
(see `gateway_cloudapi.media`), so parsing never waits for Meta.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping
from typing import Any

from gateway import Attachment, AttachmentKind, Contact, Location, Message, Sender

JSON = Any
#: (media id, file name, kind, message timestamp) -> a URL the destination can fetch
MediaLink = Callable[[str, str | None, str, float | None], str]

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})
# Inbound kinds that are not a message of the customer's (no CRM message, no 24 h window).
SILENT_TYPES = frozenset({"request_welcome"})
NOT_CUSTOMER_WRITING = frozenset({"system"})


class Malformed(ValueError):
    """An item without the fields every message has; it is skipped, not fatal."""


def to_message(item: JSON, *, names: Mapping[str, str], link: MediaLink) -> Message | None:
    """The message for `item`, or None for kinds that carry nothing to show."""
    if not isinstance(item, dict):
        raise Malformed("a message item is not an object")
    native_id, wa_id = item.get("id"), item.get("from")
    if not isinstance(native_id, str) or not native_id or not isinstance(wa_id, str) or not wa_id:
        raise Malformed("a message item has no id or from")
    kind = str(item.get("type") or "unknown")
    if kind in SILENT_TYPES:
        return None
    timestamp = _timestamp(item.get("timestamp"))
    context = found if isinstance(found := item.get("context"), dict) else {}
    body = item.get(kind)
    fields: dict[str, Any] = {"quoted_native_id": _str(context.get("id"))}
    if kind == "text":
        fields["text"] = _str(_get(body, "body")) or ""
    elif kind in MEDIA_TYPES:
        fields.update(_media(kind, body, link, timestamp))
    elif kind == "location":
        fields.update(_location(body))
    elif kind == "contacts":
        fields.update(_contacts(body))
    elif kind == "interactive":
        fields["text"] = _interactive(body)
    elif kind == "button":
        fields["text"] = _str(_get(body, "text")) or _str(_get(body, "payload")) or ""
    elif kind == "reaction":
        emoji = _str(_get(body, "emoji"))
        fields["text"] = f"reacted {emoji} to a message" if emoji else "removed a reaction"
        fields["quoted_native_id"] = _str(_get(body, "message_id"))
        fields["is_note"] = True
    elif kind == "order":
        fields.update(text=_order(body), is_note=True)
    elif kind == "system":
        fields.update(text=_str(_get(body, "body")) or "a WhatsApp system notice", is_note=True)
    else:
        fields.update(text=_unsupported(kind, item), is_note=True)
    fields["text"] = _with_extras(fields.get("text", ""), item, context)
    profile = names.get(wa_id)
    return Message(
        conversation_id=wa_id,
        native_id=native_id,
        sender=Sender(id=wa_id, name=profile, phone=f"+{wa_id}" if wa_id.isdigit() else None),
        forwarded=bool(context.get("forwarded") or context.get("frequently_forwarded")),
        conversation_name=profile,
        timestamp=timestamp,
        **fields,
    )


def _media(kind: str, body: JSON, link: MediaLink, timestamp: float | None) -> dict[str, Any]:
    if not isinstance(body, dict) or not _str(body.get("id")):
        return {"text": f"sent a {kind} that WhatsApp did not pass on", "is_note": True}
    media_id = str(body["id"])
    mime = _str(body.get("mime_type"))
    filename = _str(body.get("filename"))
    normalized: AttachmentKind = "voice" if kind == "audio" and body.get("voice") else kind  # type: ignore[assignment]
    # Without a name the link (and the re-hosted copy) would have no extension to go by.
    name = filename or normalized + (mimetypes.guess_extension((mime or "").split(";")[0]) or "")
    attachment = Attachment(
        kind=normalized,
        url=link(media_id, name, normalized, timestamp),
        mime_type=mime,
        filename=filename,
        size=_int(body.get("file_size")),
    )
    # The caption is the customer's text; it is kept once, in `text`.
    return {"text": _str(body.get("caption")) or "", "attachments": (attachment,)}


def _location(body: JSON) -> dict[str, Any]:
    try:
        latitude, longitude = float(body["latitude"]), float(body["longitude"])
    except (TypeError, KeyError, ValueError):
        return {"text": "sent a location WhatsApp did not pass on", "is_note": True}
    name, address = _str(body.get("name")), _str(body.get("address"))
    # Name, address and link are the destination's to show (as with the other providers).
    return {"text": "", "location": Location(latitude, longitude, name=name, address=address)}


def _contacts(body: JSON) -> dict[str, Any]:
    cards = [card for card in body if isinstance(card, dict)] if isinstance(body, list) else []
    contacts: list[Contact] = []
    for card in cards:
        name = _str(_get(card.get("name"), "formatted_name")) or "contact"
        phones = tuple(
            str(phone.get("phone") or phone.get("wa_id"))
            for phone in card.get("phones") or []
            if isinstance(phone, dict) and (phone.get("phone") or phone.get("wa_id"))
        )
        contacts.append(Contact(name=name, phones=phones, vcard=vcard(card)))
    if not contacts:
        return {"text": "sent an empty contact card", "is_note": True}
    # The cards are the destination's to show; repeating them in `text` showed them twice.
    return {"text": "", "contacts": tuple(contacts)}


def _interactive(body: JSON) -> str:
    kind = _str(_get(body, "type")) or ""
    reply = _get(body, kind)
    if kind == "button_reply":
        return _str(_get(reply, "title")) or _str(_get(reply, "id")) or ""
    if kind == "list_reply":
        title = _str(_get(reply, "title")) or _str(_get(reply, "id")) or ""
        description = _str(_get(reply, "description"))
        return f"{title} — {description}" if description else title
    if kind == "nfm_reply":
        answer = _str(_get(reply, "response_json")) or ""
        label = _str(_get(reply, "body")) or "submitted a form"
        return f"{label}: {answer}" if answer else label
    return f"answered an interactive message ({kind or 'unknown'})"


def _order(body: JSON) -> str:
    lines = ["🛒 order"]
    for product in _get(body, "product_items") or []:
        if not isinstance(product, dict):
            continue
        line = f"{product.get('quantity', 1)} x {product.get('product_retailer_id', '?')}"
        if "item_price" in product:
            price = f"{product['item_price']} {product.get('currency') or ''}".strip()
            line += f" ({price} each)"
        lines.append(line)
    note = _str(_get(body, "text"))
    if note:
        lines.append(note)
    return "\n".join(lines)


def _unsupported(kind: str, item: dict[str, JSON]) -> str:
    errors = item.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    reason = ""
    if first:
        details = _str(_get(first.get("error_data"), "details")) or _str(first.get("title"))
        reason = f" ({first.get('code')}: {details})" if details else f" ({first.get('code')})"
    if kind in ("unsupported", "unknown"):
        return f"sent a message the WhatsApp Cloud API cannot show{reason}"
    return f"sent a {kind} message the gateway cannot show{reason}"


def _with_extras(text: str, item: dict[str, JSON], context: dict[str, JSON]) -> str:
    product = context.get("referred_product")
    if isinstance(product, dict) and product.get("product_retailer_id"):
        text += f"\n(about product {product['product_retailer_id']})"
    referral = item.get("referral")
    if isinstance(referral, dict):
        label = _str(referral.get("headline")) or _str(referral.get("source_type")) or "an ad"
        url = _str(referral.get("source_url"))
        text += f"\n(came from {label}{' ' + url if url else ''})"
    return text.strip()


def vcard(card: dict[str, JSON]) -> str:
    """A vCard 3.0 text of a Cloud API contact card."""
    name = found if isinstance(found := card.get("name"), dict) else {}
    lines = ["BEGIN:VCARD", "VERSION:3.0"]
    parts = ("last_name", "first_name", "middle_name", "prefix", "suffix")
    lines.append("N:" + ";".join(_escape(name.get(p)) for p in parts))
    lines.append("FN:" + _escape(name.get("formatted_name") or "contact"))
    org = card.get("org")
    if isinstance(org, dict) and org.get("company"):
        lines.append(f"ORG:{_escape(org.get('company'))};{_escape(org.get('department'))}")
        if org.get("title"):
            lines.append("TITLE:" + _escape(org["title"]))
    for phone in card.get("phones") or []:
        if isinstance(phone, dict) and (phone.get("phone") or phone.get("wa_id")):
            params = f";type={_escape(phone['type'])}" if phone.get("type") else ""
            params += f";waid={_escape(phone['wa_id'])}" if phone.get("wa_id") else ""
            lines.append(f"TEL{params}:{_escape(phone.get('phone') or '+' + str(phone['wa_id']))}")
    for email in card.get("emails") or []:
        if isinstance(email, dict) and email.get("email"):
            params = f";type={_escape(email['type'])}" if email.get("type") else ""
            lines.append(f"EMAIL{params}:{_escape(email['email'])}")
    for url in card.get("urls") or []:
        if isinstance(url, dict) and url.get("url"):
            lines.append("URL:" + _escape(url["url"]))
    for address in card.get("addresses") or []:
        if isinstance(address, dict):
            keys = ("street", "city", "state", "zip", "country")
            lines.append("ADR:;;" + ";".join(_escape(address.get(k)) for k in keys))
    if card.get("birthday"):
        lines.append("BDAY:" + _escape(card["birthday"]))
    lines.append("END:VCARD")
    return "\r\n".join(lines)


def _escape(value: JSON) -> str:
    if value is None:
        return ""
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace(",", "\\,").replace(";", "\\;")


def _get(obj: JSON, key: str) -> JSON:
    return obj.get(key) if isinstance(obj, dict) else None


def _str(value: JSON) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _int(value: JSON) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _timestamp(value: JSON) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
