"""The running gateway: the composition root that wires the services, instances, route
table, ingest, hub, shared state and delivery workers together, and runs their lifecycle.

`Gateway` is what the HTTP app, the CLI and tests hold. Providers get the narrower
`GatewayHub` (`gateway.hub`); the focused parts live in `routes`, `ingest`, `notify`,
`accounts`, `instances`, `services`, `shared_state`, `unrouted` and `views`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import httpx

from gateway import services, views
from gateway.accounts import ACCOUNTS, AccountStates
from gateway.aio import stop_tasks
from gateway.delivery import Deliverer
from gateway.errors import ShutdownError
from gateway.history import HistoryImports
from gateway.hookcall import call_each_async
from gateway.hub import GatewayHub
from gateway.ingest import Ingest
from gateway.instances import InstanceState, build_instances
from gateway.metrics import Metrics, standard_metrics
from gateway.models import AccountState, AccountStatus, InboundEvent
from gateway.notify import Notifier
from gateway.observe import Observation
from gateway.outcomes import RetryPolicy
from gateway.plugins import PluginHost
from gateway.ports import PluginContext
from gateway.providers import CRMProvider, InstanceContext, Provider, ProviderKind, Route
from gateway.reports import DeliveryPeer
from gateway.routes import RouteTable
from gateway.sealing import Sealer
from gateway.settings import GatewaySettings
from gateway.shared_state import SharedState
from gateway.store import open_store
from gateway.store.base import STATE_CHANGED, Store
from gateway.unrouted import Unrouted
from gateway.wakeup import WakeReceiver, WakeSender

log = logging.getLogger("gateway")

MEDIA_SWEEP_SECONDS = 3600.0

#: What one process of the gateway does: everything ("all", one process), or one side of a
#: supervised pair (`gateway.supervisor`): "http" takes webhooks and serves the admin API,
#: the console and plugin routes; "delivery" runs the delivery slots, the release of held
#: messages and housekeeping. Both start the providers and resume history imports, as
#: every process of `--workers N` on PostgreSQL always has (see docs/architecture.md).
Role = Literal["all", "http", "delivery"]

__all__ = ["ACCOUNTS", "Gateway", "InstanceState"]


class Gateway:
    """One gateway process: build it from settings, `start()` it, `stop()` it."""

    def __init__(
        self,
        settings: GatewaySettings,
        host: PluginHost,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        resolver: Callable[[str], Any] | None = None,
        role: Role = "all",
    ) -> None:
        self.settings = settings
        self.role: Role = role
        self.host = host
        self.clock = clock
        self.admin_token = settings.admin_token
        self.metrics: Metrics = standard_metrics()
        self.store: Store = (
            store
            if store is not None
            else open_store(settings.store_url, shared=role != "all", delivers=role != "http")
        )
        #: Wake-ups between the two processes on SQLite (PostgreSQL has LISTEN/NOTIFY).
        self._wake_sender: WakeSender | None = None
        self._wake_receiver: WakeReceiver | None = None
        #: An HTTP process's line to the delivery process beside it (set by the supervisor's
        #: child): `/metrics` and `/readyz` show what that process knows too.
        self.delivery_peer: DeliveryPeer | None = None
        self._own_http = http is None
        self.http = http or services.http_client(settings.ca_file)
        self.fetcher = services.guarded_fetcher(settings, self.http, resolver)
        self.media = services.media_store(settings, clock)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.deliverer: Deliverer | None = None
        self._janitor: asyncio.Task[None] | None = None
        self.ready = False
        self.problems: list[str] = []
        self.notifier = Notifier(self.metrics, host)
        self.accounts = AccountStates(self.store, self.metrics, self.notifier)
        self.route_table = RouteTable(
            self.store,
            (
                Route(r.name, r.channel, r.crm, target=r.target, direction=r.direction)
                for r in settings.routes
            ),
        )
        self.instances: dict[str, Provider] = {}
        self.kinds: dict[str, ProviderKind] = {}
        self.instance_states: dict[str, InstanceState] = {}
        self.ingest = Ingest(
            store=self.store,
            routes=self.route_table,
            notifier=self.notifier,
            accounts=self.accounts,
            host=host,
            instances=self.instances,
            wake=self.wake,
            clock=clock,
        )
        self.shared = SharedState(
            self.store, self._shared_changed, poll_interval=settings.state_check_seconds
        )
        self.unrouted = Unrouted(
            self.store,
            routes=self.route_table.all,
            planner=self.ingest.plan_one,
            notify=self.notify,
            wake=self.wake,
            clock=clock,
            max_age=settings.hold_unrouted_days * 86400,
        )
        self.history = HistoryImports(
            store=self.store,
            instances=self.instances,
            routes=self.route_table.mapping,
            ingest=self.ingest,
            settings=settings.history,
            keep_days=settings.keep_events_days,
            poll_seconds=settings.workers.poll_interval,
            clock=clock,
        )
        self.hub = GatewayHub(
            public_url=settings.public_url,
            instances=self.instances,
            kinds=self.kinds,
            routes=self.route_table,
            accounts=self.accounts,
            store=self.store,
            ingest=self.ingest,
            history=self.history,
            on_route_added=self.unrouted.poke,
            portals={name: channel_portals(c.options) for name, c in settings.channels.items()},
            clock=clock,
        )
        #: What the lifecycle and route hooks get (`startup`, `shutdown`, `http_routes`).
        self.plugin_context = PluginContext(
            public_url=settings.public_url,
            hub=self.hub,
            http=self.http,
            plugin_settings=settings.plugins,
        )
        providers = host.providers or host.collect_providers()
        instances, kinds = build_instances(settings, providers, self._context)
        self.instances.update(instances)
        self.kinds.update(kinds)
        self.accounts.watch(self._tell_crms)

    async def _tell_crms(self, instance: str, state: AccountState) -> None:
        """A channel's account changed: CRMs may tell their users (Bitrix24's alerts)."""
        if self.kinds.get(instance) != "channel":
            return
        for provider in self.instances.values():
            if isinstance(provider, CRMProvider):
                await provider.channel_state_changed(instance, state)

    def _context(self, name: str, config: Mapping[str, Any]) -> InstanceContext:
        keys = self.settings.encryption_keys
        sealer = Sealer(keys) if keys else None
        state = self.instance_states[name] = InstanceState(
            self.store, f"instance:{name}", sealer=sealer
        )
        return InstanceContext(
            name=name,
            config=config,
            http=self.http,
            state=state,
            hub=self.hub,
            media=self.media,
            fetcher=self.fetcher,
            public_url=self.settings.public_url,
        )

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # The versions first, then the copies: a change in between is seen at the first check.
        await self.shared.start()
        await self.route_table.load()
        await self.accounts.load(self.instances)
        retry = self.settings.retry
        workers = self.settings.workers
        deliverer = Deliverer(
            store=self.store,
            providers=self.instances,
            routes=self.route_table.mapping,
            retry=RetryPolicy(retry.max_attempts, retry.base_delay, retry.max_delay, retry.jitter),
            concurrency=workers.concurrency,
            lease_seconds=workers.lease_seconds,
            poll_interval=workers.poll_interval,
            reorder_window=workers.reorder_window,
            clock=self.clock,
            notify=self.notify,
            owner=self.owner,
        )
        # The HTTP process of a pair delivers nothing; it wakes the delivery process.
        self.deliverer = None if self.role == "http" else deliverer
        sqlite_path = getattr(self.store, "path", None) if self.role != "all" else None
        if isinstance(sqlite_path, str):
            if self.role == "http":
                self._wake_sender = WakeSender(sqlite_path)
            else:
                self._wake_receiver = WakeReceiver(sqlite_path, self._heard)
                self._wake_receiver.start()
        for name, provider in self.instances.items():
            try:
                await provider.start()
            except Exception as exc:
                # One instance that cannot reach its provider must not stop the others;
                # its jobs wait in the queue and /readyz says what is wrong.
                log.exception("instance %s failed to start", name, extra={"instance": name})
                self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
                await self.accounts.set(name, AccountState(AccountStatus.ERROR, detail=str(exc)))
        if self.deliverer is not None:
            await self.deliverer.start()
        # Work enqueued by other processes sharing the store (PostgreSQL) wakes us too, and
        # so do changes of shared state (routes, installs, tokens) made anywhere.
        await self.store.subscribe(self._heard)
        self.wake()
        if self.role != "http":
            self.unrouted.start()
            self._janitor = asyncio.create_task(self._sweep_media(), name="media-sweep")
        self.history.start()
        await call_each_async(self.host.hook.startup, context=self.plugin_context)
        self.ready = True

    async def stop(self) -> None:
        """Stop everything, also past a background task that ignored its cancellation
        (`ShutdownError`, raised once the store is closed)."""
        self.ready = False
        stuck: list[ShutdownError] = []

        async def step(stop: Callable[[], Awaitable[None]]) -> None:
            try:
                await stop()
            except ShutdownError as exc:
                log.error("%s", exc)
                stuck.append(exc)

        janitor, self._janitor = self._janitor, None
        if janitor is not None:
            await step(lambda: stop_tasks([janitor]))
        await call_each_async(self.host.hook.shutdown, context=self.plugin_context)
        await step(self.history.stop)
        await step(self.unrouted.stop)
        await step(self.shared.stop)
        if self.deliverer is not None:
            await step(self.deliverer.stop)
        receiver, self._wake_receiver = self._wake_receiver, None
        if receiver is not None:
            receiver.stop()
        sender, self._wake_sender = self._wake_sender, None
        if sender is not None:
            sender.close()
        for name, provider in self.instances.items():
            try:
                await provider.stop()
            except Exception:
                log.exception("instance %s failed to stop", name, extra={"instance": name})
        self.notifier.flush()  # observations still queued are counted, logged, observed
        await self.store.close()
        if self._own_http:
            await self.http.aclose()
        if stuck:
            raise stuck[0]

    def own_problems(self) -> list[str]:
        """What keeps this process from working (`/readyz`): instances that failed to start
        here, a media store it cannot write to."""
        problems = list(self.problems)
        if self.media.fault:
            problems.append(f"media: {self.media.fault}")
        return problems

    async def housekeep(self) -> None:
        """Expired media go, events past their retention are forgotten, held ones expire."""
        await self.media.sweep()
        keep = self.settings.keep_events_days * 86400
        pruned = await self.store.prune_events(self.clock() - keep)
        if pruned:
            log.info("forgot %d events older than %g days", pruned, keep / 86400)
        await self.unrouted.expire()

    async def _sweep_media(self) -> None:
        while True:
            try:
                await self.housekeep()
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(MEDIA_SWEEP_SECONDS)

    # shared state ----------------------------------------------------------------------
    def _heard(self, what: str | None) -> None:
        """The store's news: a destination with work, or a change of shared state."""
        if what == STATE_CHANGED or what is None:
            self.shared.poke()
            if self._wake_sender is not None:
                self._wake_sender.wake(STATE_CHANGED)  # the other process re-reads too
        if what != STATE_CHANGED:
            self.wake(what)

    async def _shared_changed(self, scope: str) -> None:
        if scope == "routes":
            await self.route_table.load()
            self.unrouted.poke()
        elif scope == "held":
            self.unrouted.poke()
        elif scope == ACCOUNTS:
            await self.accounts.load(self.instances)
        elif (state := self.instance_states.get(scope.removeprefix("instance:"))) is not None:
            state.generation += 1

    # what the app, the workers and tests call ---------------------------------------------
    def notify(self, observation: Observation) -> None:
        """Count, log and hand an observation to the `observe` hook."""
        self.notifier.notify(observation)

    def wake(self, destination: str | None = None) -> None:
        if self.deliverer is not None:
            self.deliverer.wake(destination)
        elif self._wake_sender is not None:
            self._wake_sender.wake(destination)

    async def emit(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        return await self.ingest(instance, events)

    async def account_state(self, instance: str) -> AccountState:
        return await self.hub.account_state(instance)

    async def routes(self) -> list[Route]:
        return self.route_table.all()

    async def add_route(self, route: Route) -> None:
        await self.hub.add_route(route)

    async def remove_route(self, name: str) -> None:
        await self.hub.remove_route(name)

    def instance_names(self, kind: ProviderKind | None = None) -> list[str]:
        return self.hub.instance_names(kind)

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        return self.hub.webhook_url(instance, subpath)

    # admin views -----------------------------------------------------------------------
    async def instances_info(self) -> list[dict[str, Any]]:
        return await views.instances_info(self.hub, self.instances, self.kinds)

    async def routes_info(self) -> list[dict[str, Any]]:
        return views.routes_info(self.route_table)

    async def status_info(self) -> dict[str, Any]:
        from gateway.status import gather

        providers = self.host.providers or self.host.collect_providers()
        routes = self.route_table.all()
        report = await gather(self.settings, self.store, providers, routes, self.clock())
        return report.to_json()

    async def plugins_info(self) -> list[dict[str, Any]]:
        return views.plugins_info(self.host)


def channel_portals(options: Mapping[str, Any]) -> frozenset[str]:
    """`[channels.NAME] portals`: the tenants that may see the channel (empty: any)."""
    portals = options.get("portals")
    return frozenset(str(p) for p in portals) if isinstance(portals, list) else frozenset()
