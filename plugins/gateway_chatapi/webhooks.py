"""Chat API webhooks: the URL secret that authenticates them, and their bodies as events.

Chat API signs nothing (spec 1.5), so the webhook URL carries a per-instance secret:
`{public_url}/webhooks/{instance}/{webhook_secret}`. A request without it is refused before
its body is read. One POST holds arrays (`messages`, `ack`) or one instance status; each
item becomes its own event with its own dedupe key. A malformed item is skipped with a
warning rather than failing the batch: a 4xx would make Chat API resend the good items
with it, up to 20 times, and then drop them all.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import BadRequest, InboundEvent, Unauthorized, WebhookRequest
from gateway_chatapi.convert import (
    BadItem,
    account_state,
    ack_key,
    message_key,
    parse_ack,
    parse_message,
)

log = logging.getLogger("gateway_chatapi")

IsOwn = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class HookBody:
    """The parts of a webhook body the gateway reads."""

    instance_id: str | None
    messages: list[Any] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)
    status: Mapping[str, Any] | None = None


def authenticate(request: WebhookRequest, secret: str) -> None:
    """Refuse unless the URL ends in the instance's secret (compared in constant time)."""
    given = request.subpath.strip("/")
    if not given:
        raise Unauthorized("this webhook URL needs the instance's secret after the instance name")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Unauthorized("wrong webhook secret in the URL", status=403)


def decode(body: bytes) -> HookBody:
    """The JSON body, shape-checked; raises `BadRequest` when it cannot be a Chat API hook."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    raw_id = data.get("instanceId")
    parsed = HookBody(instance_id=str(raw_id) if raw_id not in (None, "") else None)
    for key in ("messages", "ack"):
        value = data.get(key, [])
        if not isinstance(value, list):
            raise BadRequest(f"{key} must be a list", status=422)
        if key == "messages":
            parsed.messages = value
        else:
            parsed.acks = value
    if "accountStatus" in data:
        parsed.status = data
    return parsed


@dataclass(slots=True)
class ItemEvents:
    """Events made of a list of message items, and the highest `messageNumber` among them."""

    events: list[InboundEvent] = field(default_factory=list)
    highest: int | None = None


async def message_events(
    items: Sequence[Any],
    *,
    instance_id: str,
    groups: bool,
    mirror_phone_messages: bool,
    is_own: IsOwn,
) -> ItemEvents:
    """`messages[]` items (from a webhook or `/messages`) as events for the CRM.

    `fromMe` items are the gateway's own sends echoed back (never routed again, or they
    would loop) or messages typed on the phone (mirrored as notes when enabled).
    """
    result = ItemEvents()
    for item in items:
        try:
            parsed = parse_message(item, groups=groups)
        except BadItem as exc:
            log.warning("skipped a Chat API message item: %s", exc)
            continue
        if parsed.number is not None:
            result.highest = max(result.highest or 0, parsed.number)
        if parsed.message is None:
            continue
        if parsed.from_me and (not mirror_phone_messages or await is_own(parsed.id)):
            continue
        result.events.append(InboundEvent(message_key(instance_id, parsed.id), parsed.message))
    return result


def ack_events(items: Sequence[Any], *, instance_id: str) -> list[InboundEvent]:
    events = []
    for item in items:
        try:
            parsed = parse_ack(item)
        except BadItem as exc:
            log.warning("skipped a Chat API ack item: %s", exc)
            continue
        if parsed is not None:
            word, update = parsed
            events.append(InboundEvent(ack_key(instance_id, update.native_id, word), update))
    return events


def status_event(data: Mapping[str, Any], *, instance_id: str) -> InboundEvent:
    state = account_state(data)
    # Account states are not stored; the key only has to be well-formed.
    return InboundEvent(f"chatapi:{instance_id}:account:{state.status.value}", state)
