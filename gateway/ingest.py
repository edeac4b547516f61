"""Ingest: inbound events of one instance become stored events with their jobs, in one commit.

An account state is recorded (`AccountStates`), not stored as an event. Every other event
is planned onto the routes of its instance (`planning.plan`, with the plugins'
`filter_message`), committed with its jobs (deduplicated by the store), observed as
`accepted` or `duplicate` (and `held` when no route carries it yet), and the destinations
that got new jobs are woken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gateway.accounts import AccountStates
from gateway.models import AccountState, InboundEvent, Message
from gateway.notify import Notifier
from gateway.observe import Observation
from gateway.planning import plan
from gateway.plugins import PluginHost
from gateway.providers import Provider, Route
from gateway.routes import RouteTable
from gateway.store.base import IngestItem, Store


class Ingest:
    """`await ingest(instance, events)` -> for each event, whether it was new."""

    def __init__(
        self,
        *,
        store: Store,
        routes: RouteTable,
        notifier: Notifier,
        accounts: AccountStates,
        host: PluginHost,
        instances: Mapping[str, Provider],
        wake: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._routes = routes
        self._notifier = notifier
        self._accounts = accounts
        self._host = host
        self._instances = instances
        self._wake = wake
        self._clock = clock
        # Looked up once: the hook is called for every message on the hot path.
        self._has_filters = bool(host.hook.filter_message.get_hookimpls())

    async def __call__(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        """Persist events from `instance` with their jobs; True for each one that was new."""
        routable: list[InboundEvent] = []
        for inbound in events:
            if isinstance(inbound.event, AccountState):
                await self._accounts.set(instance, inbound.event)
            else:
                routable.append(inbound)
        if not routable:
            return [True] * len(events)
        routes = self._routes.for_instance(instance)
        message_filter = self._filter if self._has_filters else None
        items = [
            plan(instance, inbound, routes, message_filter, self._wants_statuses)
            for inbound in routable
        ]
        ids = await self._store.ingest(items, self._clock())
        fresh: dict[int, bool] = {}
        destinations: set[str] = set()
        for inbound, item, event_id in zip(routable, items, ids, strict=True):
            new = event_id is not None
            fresh[id(inbound)] = new
            native = getattr(inbound.event, "native_id", None)
            self._notifier.notify_later(
                Observation(
                    "accepted" if new else "duplicate",
                    instance,
                    message_id=native,
                    detail={"jobs": len(item.jobs) if new else 0, "kind": inbound.event.kind},
                )
            )
            if new:
                destinations.update(job.destination for job in item.jobs)
                if item.hold:
                    self._held(instance, inbound, native)
        # One wake per destination: the slot it rouses claims every due lane at once.
        for destination in destinations:
            self._wake(destination)
        # One answer per event, in the caller's order (account states are always taken).
        return [fresh.get(id(inbound), True) for inbound in events]

    def plan_one(self, instance: str, inbound: InboundEvent) -> IngestItem:
        """Plan one event with the current routes (held messages, when released)."""
        routes = self._routes.for_instance(instance)
        message_filter = self._filter if self._has_filters else None
        return plan(instance, inbound, routes, message_filter, self._wants_statuses)

    def _held(self, instance: str, inbound: InboundEvent, native: str | None) -> None:
        where = f"{instance} ({inbound.target})" if inbound.target else instance
        self._notifier.notify_later(
            Observation(
                "held",
                instance,
                message_id=native,
                detail={
                    "kind": inbound.event.kind,
                    "why": f"no route carries messages from {where}; kept until one does",
                },
            )
        )

    def _filter(self, message: Message, route: Route, source: str) -> Message | None:
        hook = self._host.hook.filter_message
        for result in hook(message=message, route=route, source=source):
            if result is False:
                return None
            if isinstance(result, Message):
                message = result
        return message

    def _wants_statuses(self, instance: str) -> bool:
        provider = self._instances.get(instance)
        return provider is not None and provider.capabilities.wants_statuses
