"""Cloud API webhooks: the signature check and the envelope -> `InboundEvent`s.

One POST may batch several `entry[].changes[]`, each with several messages and statuses;
every item becomes its own event with its own dedupe key, so a redelivered or re-batched
body has no second effect. Items for another phone number (one app's webhook serves every
number of the app) and items that cannot be read are skipped, never refused: Meta retries
refused bodies for days and may switch the webhook off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from gateway import DeliveryStatus, InboundEvent, StatusUpdate
from gateway_cloudapi.account import state_from_update, update_number
from gateway_cloudapi.errors import describe
from gateway_cloudapi.inbound import NOT_CUSTOMER_WRITING, Malformed, MediaLink, to_message

log = logging.getLogger("gateway_cloudapi")
JSON = Any

STATUSES = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "played": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
ACCOUNT_FIELDS = frozenset({"account_update", "phone_number_quality_update"})


def signature_valid(body: bytes, header: str | None, app_secret: str) -> bool:
    """Whether `header` is `sha256=<HMAC-SHA256 of the raw body>` with the app secret."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[7:].strip().lower().encode(), expected.encode())


@dataclass(slots=True)
class Parsed:
    """What one webhook body held for this number."""

    events: list[InboundEvent] = field(default_factory=list)
    #: wa_id -> newest timestamp of a message the customer wrote (opens the 24 h window)
    last_inbound: dict[str, float] = field(default_factory=dict)
    #: The wamid of each customer's newest message in the body (what a read mark names).
    last_inbound_id: dict[str, str] = field(default_factory=dict)
    #: the business number's display digits, as Meta states them in `metadata`
    display_number: str | None = None
    skipped: list[str] = field(default_factory=list)
    #: A `messages` change for this number came (messages or statuses): webhooks arrive.
    heard: bool = False
    #: (wamid, biz_opaque_callback_data, recipient) of each status echoing a send's tag.
    tagged: list[tuple[str, str, str | None]] = field(default_factory=list)


def parse_body(
    body: JSON, *, phone_number_id: str, display_number: str | None, link: MediaLink
) -> Parsed:
    parsed = Parsed()
    entries = body.get("entry") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        when = entry.get("time") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict):
                continue
            name, value = str(change.get("field") or ""), change.get("value")
            if name == "messages" and isinstance(value, dict):
                _messages(value, phone_number_id, link, parsed)
            elif name in ACCOUNT_FIELDS:
                _account(name, value, when, phone_number_id, display_number, parsed)
    return parsed


def _messages(value: dict[str, JSON], pnid: str, link: MediaLink, parsed: Parsed) -> None:
    metadata = found if isinstance(found := value.get("metadata"), dict) else {}
    if str(metadata.get("phone_number_id") or "") != pnid:
        parsed.skipped.append(f"a change for phone number id {metadata.get('phone_number_id')!r}")
        return
    parsed.heard = True
    display = "".join(ch for ch in str(metadata.get("display_phone_number") or "") if ch.isdigit())
    parsed.display_number = display or parsed.display_number
    names = {
        str(c["wa_id"]): str(c["profile"]["name"])
        for c in value.get("contacts") or []
        if isinstance(c, dict)
        and c.get("wa_id")
        and isinstance(c.get("profile"), dict)
        and c["profile"].get("name")
    }
    for item in value.get("messages") or []:
        try:
            message = to_message(item, names=names, link=link)
        except Malformed as exc:
            parsed.skipped.append(str(exc))
            continue
        kind = str(item.get("type"))
        if kind not in NOT_CUSTOMER_WRITING:
            when = _float(item.get("timestamp"))
            wa_id = str(item["from"])
            if when is not None and when >= parsed.last_inbound.get(wa_id, 0.0):
                parsed.last_inbound[wa_id] = when
                if isinstance(item.get("id"), str):
                    parsed.last_inbound_id[wa_id] = item["id"]
        if message is not None:
            key = f"cloudapi:{pnid}:{message.native_id}"
            parsed.events.append(InboundEvent(key, message))
    for item in value.get("statuses") or []:
        update = _status(item)
        if update is None:
            parsed.skipped.append("an unreadable status")
            continue
        raw = str(item["status"]).lower()
        parsed.events.append(InboundEvent(f"cloudapi:{update.native_id}:{raw}", update))
        label = item.get("biz_opaque_callback_data")
        if isinstance(label, str) and label:
            parsed.tagged.append((update.native_id, label, update.conversation_id))
    for error in value.get("errors") or []:
        if isinstance(error, dict):
            code = error.get("code")
            log.warning("Cloud API reports error %s: %s", code, describe(_int(code), error))


def _status(item: JSON) -> StatusUpdate | None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    status = STATUSES.get(str(item.get("status") or "").lower())
    if status is None:
        return None
    errors = item.get("errors")
    first = (
        errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None
    )
    recipient = item.get("recipient_id")
    return StatusUpdate(
        native_id=item["id"],
        status=status,
        conversation_id=str(recipient) if recipient else None,
        error_code=str(first.get("code")) if first and first.get("code") is not None else None,
        error_text=describe(_int(first.get("code")), first) if first else None,
        timestamp=_float(item.get("timestamp")),
    )


def _account(
    name: str,
    value: JSON,
    when: JSON,
    pnid: str,
    display_number: str | None,
    parsed: Parsed,
) -> None:
    number = update_number(value)
    if number and display_number and number != display_number:
        parsed.skipped.append(f"an {name} for another number")
        return
    state = state_from_update(name, value)
    if state is None:
        return
    digest = hashlib.sha256(repr(sorted(value.items())).encode()).hexdigest()[:16]
    key = f"cloudapi:{pnid}:{name}:{value.get('event')}:{when}:{digest}"
    parsed.events.append(InboundEvent(key, state))


def _float(value: JSON) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _int(value: JSON) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
