"""Turning queued events into Meta-shaped webhook POSTs, and posting them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .payloads import encode, webhook_headers
from .state import Delivery

JSON = Any


@dataclass(slots=True)
class PendingEvent:
    """An event waiting for `deliver_webhooks`: one message, status, error or whole value."""

    field: str
    kind: Literal["message", "status", "error", "value"]
    item: dict[str, JSON]
    contact: dict[str, JSON] | None = None
    time: int | None = None


def reorder_statuses(events: list[PendingEvent]) -> list[PendingEvent]:
    """Reverse the statuses among themselves, leaving messages where they are.

    Reversing (rather than shuffling) guarantees `read` arrives before `delivered` before
    `sent`, which is the order a gateway's monotonic merge must survive.
    """
    slots = [i for i, event in enumerate(events) if event.kind == "status"]
    result = list(events)
    for slot, event in zip(slots, reversed([events[i] for i in slots]), strict=True):
        result[slot] = event
    return result


def _changes(events: list[PendingEvent], metadata: dict[str, str]) -> list[tuple[JSON, int | None]]:
    """Group events into change values: one per customer for messages, one for all statuses,
    one for all errors, and one per other-field value; in order of first appearance."""
    changes: list[tuple[JSON, int | None]] = []
    groups: dict[tuple[str, str], dict[str, JSON]] = {}
    base = {"messaging_product": "whatsapp", "metadata": metadata}
    for event in events:
        if event.kind == "value":
            changes.append(({"field": event.field, "value": event.item}, event.time))
            continue
        if event.kind == "message":
            assert event.contact is not None
            key = ("messages", str(event.contact["wa_id"]))
            list_name = "messages"
        else:
            key = (event.kind, "")
            list_name = "statuses" if event.kind == "status" else "errors"
        value = groups.get(key)
        if value is None:
            value = dict(base)
            if event.contact is not None:
                value["contacts"] = [event.contact]
            value[list_name] = []
            groups[key] = value
            changes.append(({"field": event.field, "value": value}, None))
        value[list_name].append(event.item)
    return changes


def build_posts(
    events: list[PendingEvent],
    *,
    waba_id: str,
    metadata: dict[str, str],
    batch: bool,
    changes_per_entry: int,
) -> list[JSON]:
    """The webhook bodies for `events`: all in one POST when `batch`, else one POST each.

    A batch spreads its changes over several entries (all with the WABA id) of at most
    `changes_per_entry` changes, since Meta does deliver multi-entry bodies after a backlog.
    """
    if not events:
        return []
    groups = [events] if batch else [[event] for event in events]
    posts: list[JSON] = []
    for group in groups:
        changes = _changes(group, metadata)
        entries: list[JSON] = []
        size = max(1, changes_per_entry)
        for start in range(0, len(changes), size):
            chunk = changes[start : start + size]
            entry: dict[str, JSON] = {"id": waba_id}
            times = [t for _, t in chunk if t is not None]
            if times:
                entry["time"] = max(times)
            entry["changes"] = [change for change, _ in chunk]
            entries.append(entry)
        posts.append({"object": "whatsapp_business_account", "entry": entries})
    return posts


def serialize(payload: JSON, app_secret: str) -> tuple[bytes, dict[str, str]]:
    body = encode(payload)
    return body, webhook_headers(app_secret, body)


async def post(
    http: httpx.AsyncClient | None,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    attempt: int,
    at: float,
    limit: float,
) -> Delivery:
    """POST one webhook body; transport errors become a failed Delivery, never an exception."""
    delivery = Delivery(url=url, body=body, headers=headers, attempt=attempt, at=at)
    try:
        if http is None:
            async with httpx.AsyncClient() as client:
                response = await client.post(url, content=body, headers=headers, timeout=limit)
        else:
            response = await http.post(url, content=body, headers=headers, timeout=limit)
    except httpx.HTTPError as exc:
        delivery.error = f"{type(exc).__name__}: {exc}"
        return delivery
    delivery.status = response.status_code
    return delivery


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempts` (1 = first retry): doubling, capped."""
    return float(min(base * 2 ** max(0, attempts - 1), cap))
