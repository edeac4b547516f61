"""Turning an accepted inbound event into delivery jobs, and job payloads back into objects.

Runs inside the webhook request, before the commit, so it does no I/O: every decision that
needs the id map (edits, quotes, statuses) is taken by the worker at delivery time, when the
message it refers to has certainly been delivered or dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.models import (
    JSON,
    AccountState,
    Delete,
    Edit,
    Event,
    InboundEvent,
    Message,
    StatusUpdate,
    event_from_json,
    event_to_json,
)
from gateway.providers import Route
from gateway.store.base import IngestItem, NewJob

MessageFilter = Callable[[Message, Route, str], Message | None]


def lane_key(route: str, destination: str, conversation_id: str) -> str:
    """One lane per conversation per destination per route: the unit of ordering."""
    return f"{route}|{destination}|{conversation_id}"


def conversation_of(event: Event) -> str:
    if isinstance(event, StatusUpdate):
        return event.conversation_id or event.native_id
    if isinstance(event, AccountState):
        return "account"
    return event.conversation_id


def routes_for(source: str, target: str | None, routes: Sequence[Route]) -> list[Route]:
    """Routes that carry events from `source`; a CRM's event must also match the target."""
    matched = []
    for route in routes:
        if not route.carries(source):
            continue
        if source == route.crm and route.target is not None and route.target != target:
            continue
        matched.append(route)
    return matched


def status_routes(source: str, target: str | None, routes: Sequence[Route]) -> list[Route]:
    """A status travels back along routes that carried messages *to* `source`."""
    matched = []
    for route in routes:
        other = route.other_side(source)
        if source not in (route.channel, route.crm) or not route.carries(other):
            continue
        if source == route.crm and route.target is not None and route.target != target:
            continue
        matched.append(route)
    return matched


def plan(
    source: str,
    inbound: InboundEvent,
    routes: Sequence[Route],
    message_filter: MessageFilter | None = None,
    wants_statuses: Callable[[str], bool] = lambda _instance: True,
) -> IngestItem:
    """The ingest record for one inbound event: the event itself and the jobs it causes."""
    event = inbound.event
    # Encoded once: the event is stored, and usually sent unchanged along every route.
    encoded = event_to_json(event)
    jobs: list[NewJob] = []
    conversation: str | None = None
    hold = False
    if isinstance(event, StatusUpdate):
        for route in status_routes(source, inbound.target, routes):
            destination = route.other_side(source)
            if not wants_statuses(destination):
                continue
            jobs.append(
                NewJob(
                    kind="status",
                    route=route.name,
                    source=source,
                    destination=destination,
                    lane=lane_key(route.name, destination, conversation_of(event)),
                    payload={"event": encoded, "target": inbound.target},
                )
            )
    elif isinstance(event, Message | Edit | Delete):
        conversation = conversation_of(event)
        carriers = routes_for(source, inbound.target, routes)
        # No route carries it (yet): the store holds it for the route that will.
        hold = not carriers
        for route in carriers:
            routed: Event | None = event
            if isinstance(event, Message) and message_filter is not None:
                routed = message_filter(event, route, source)
            if routed is None:
                continue
            destination = route.other_side(source)
            jobs.append(
                NewJob(
                    kind="send",
                    route=route.name,
                    source=source,
                    destination=destination,
                    lane=lane_key(route.name, destination, conversation_of(routed)),
                    payload={
                        "event": encoded if routed is event else event_to_json(routed),
                        "target": inbound.target,
                    },
                )
            )
    return IngestItem(
        instance=source,
        dedupe_key=inbound.dedupe_key,
        event={"event": encoded, "target": inbound.target},
        jobs=jobs,
        hold=hold,
        conversation=conversation,
        target=inbound.target,
    )


def ack_job(route: Route, source: str, payload: Mapping[str, Any], **result: JSON) -> NewJob:
    """A job that tells `source` what became of the message in `payload`."""
    event = event_from_json(payload["event"])
    return NewJob(
        kind="ack",
        route=route.name,
        source=route.other_side(source),
        destination=source,
        lane=lane_key(route.name, source, conversation_of(event)),
        payload={"event": payload["event"], "target": payload.get("target"), **result},
    )
