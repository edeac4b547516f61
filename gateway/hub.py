"""The hub: what a provider may ask of the running gateway (`gateway.providers.Hub`).

Providers hold this object, not the `Gateway`: it reaches the route table, ingest, the
account states and the store through narrow doors only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from gateway.accounts import AccountStates
from gateway.history import HistoryImports
from gateway.ingest import Ingest
from gateway.models import AccountState, AccountStatus, InboundEvent
from gateway.phones import phone_digits
from gateway.providers import ChannelProvider, MessageTemplate, Provider, ProviderKind, Route
from gateway.routes import RouteTable
from gateway.store.base import Store

log = logging.getLogger("gateway")

# A send claimed longer ago than this is no provider call still running (the HTTP read
# timeout is 30 s): an older mark is a crashed process's or a retry's, waiting to be asked
# whether it landed. Delivery claims just before it calls (one batch per claim).
IN_FLIGHT_SECONDS = 60.0


class GatewayHub:
    """The `Hub` of one gateway process."""

    def __init__(
        self,
        *,
        public_url: str,
        instances: Mapping[str, Provider],
        kinds: Mapping[str, ProviderKind],
        routes: RouteTable,
        accounts: AccountStates,
        store: Store,
        ingest: Ingest,
        history: HistoryImports,
        on_route_added: Callable[[], None] = lambda: None,
        portals: Mapping[str, frozenset[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._public_url = public_url.rstrip("/")
        self._portals = dict(portals or {})
        self._instances = instances
        self._kinds = kinds
        self._routes = routes
        self._accounts = accounts
        self._on_route_added = on_route_added
        self._store = store
        self._ingest = ingest
        self._history = history
        self._clock = clock

    async def emit(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        """Persist events that did not arrive by webhook (polling, refills); True if new."""
        return await self._ingest(instance, events)

    def instance_names(self, kind: ProviderKind | None = None) -> list[str]:
        return [name for name, k in self._kinds.items() if kind is None or k == kind]

    def provider_of(self, instance: str) -> str:
        return self._instances[instance].name

    def channel_portals(self, channel: str) -> frozenset[str]:
        return self._portals.get(channel, frozenset())

    async def account_state(self, instance: str) -> AccountState:
        """Ask the provider; when it cannot say, the last state it reported."""
        provider = self._instances[instance]
        last = self._accounts.last(instance)
        try:
            state = await provider.account_state()
        except Exception as exc:
            log.warning("account state of %s unavailable: %s", instance, exc)
            return last or AccountState(AccountStatus.UNKNOWN, str(exc))
        if state.status is AccountStatus.UNKNOWN and last is not None:
            return last
        await self._accounts.set(instance, state)
        return state

    async def routes(self) -> list[Route]:
        return self._routes.all()

    async def add_route(self, route: Route) -> None:
        for name in (route.channel, route.crm):
            if name not in self._instances:
                raise ValueError(f"no instance named {name!r}")
        await self._routes.add(route)
        self._on_route_added()

    async def remove_route(self, name: str) -> None:
        await self._routes.remove(name)

    async def import_history(self, route: str, days: float | None = None) -> bool:
        return await self._history.request(route, days)

    def history_days(self) -> float:
        return self._history.default_days

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        return await self._store.lookup_by_destination(instance, native_id) is not None

    async def sends_in_flight(self, instance: str) -> bool:
        # From the store, not this process: under the supervisor the delivery process
        # sends, and the HTTP processes take the echoes.
        return await self._store.sending(instance, self._clock() - IN_FLIGHT_SECONDS) > 0

    def conversation_for_phone(self, instance: str, phone: str) -> str:
        provider = self._instances.get(instance)
        if not isinstance(provider, ChannelProvider):
            raise KeyError(f"no channel named {instance!r}")
        return provider.conversation_for_phone(phone_digits(phone))

    async def message_templates(self, instance: str) -> list[MessageTemplate]:
        provider = self._instances.get(instance)
        if not isinstance(provider, ChannelProvider):
            return []
        return await provider.message_templates()

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        base = f"{self._public_url}/webhooks/{instance}"
        return f"{base}/{subpath.lstrip('/')}" if subpath else base
