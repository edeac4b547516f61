"""The running gateway: instances, routes, the store, ingest and the delivery workers.

`Gateway` is what the HTTP app, the CLI and plugins hold. It implements the `Hub` protocol
that providers use to reach back into the core.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.delivery import Deliverer
from gateway.fetch import GuardedFetcher
from gateway.media import MediaStore
from gateway.metrics import Metrics, standard_metrics
from gateway.models import (
    JSON,
    AccountState,
    AccountStatus,
    InboundEvent,
    Message,
)
from gateway.observe import Observation
from gateway.outcomes import RetryPolicy
from gateway.phones import phone_digits
from gateway.planning import plan
from gateway.plugins import PluginHost
from gateway.providers import (
    ChannelProvider,
    InstanceContext,
    MessageTemplate,
    Provider,
    ProviderKind,
    Route,
)
from gateway.settings import GatewaySettings
from gateway.shared_state import SharedState
from gateway.store import open_store
from gateway.store.base import STATE_CHANGED, IngestItem, Store, StoredRoute
from gateway.unrouted import Unrouted

log = logging.getLogger("gateway")

MEDIA_SWEEP_SECONDS = 3600.0
# Where account states live in the store: every process reads them there.
ACCOUNTS = "accounts"
_LOG_LEVELS = {
    "dead_lettered": logging.WARNING,
    "rejected": logging.WARNING,
    "held": logging.WARNING,
    "accepted": logging.DEBUG,
    "duplicate": logging.DEBUG,
    "delivered": logging.DEBUG,
}


class InstanceState:
    """Durable key/value storage of one instance, namespaced in the gateway store.

    `generation` counts the changes of this state that any process announced with
    `changed()`, as far as this process has heard (see `shared_state`): a plugin that keeps
    a copy in memory re-reads it when the generation moved.
    """

    def __init__(self, store: Store, namespace: str) -> None:
        self._store = store
        self._namespace = namespace
        self.generation = 0

    @property
    def scope(self) -> str:
        return self._namespace

    async def changed(self) -> None:
        """Tell every process (this one included) that copies of this state are stale."""
        self.generation += 1
        await self._store.bump([self._namespace])

    async def get(self, key: str) -> JSON | None:
        return await self._store.kv_get(self._namespace, key)

    async def put(self, key: str, value: JSON) -> None:
        await self._store.kv_put(self._namespace, key, value)

    async def delete(self, key: str) -> None:
        await self._store.kv_delete(self._namespace, key)

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]:
        return await self._store.kv_items(self._namespace, prefix)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._store.lock(f"{self._namespace}:{key}")


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
    ) -> None:
        self.settings = settings
        self.host = host
        self.clock = clock
        self.admin_token = settings.admin_token
        self.metrics: Metrics = standard_metrics()
        self.store: Store = store if store is not None else open_store(settings.store_url)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )
        fetch = settings.fetch
        self.fetcher = GuardedFetcher(
            self.http,
            allow_private=fetch.allow_private,
            allowed_hosts=fetch.allowed_hosts,
            timeout=fetch.timeout,
            max_bytes=fetch.max_bytes,
            resolver=resolver,
        )
        media = settings.media
        self.media = MediaStore(
            Path(media.directory),
            settings.public_url,
            secret=_media_secret(Path(media.directory)),
            max_total_bytes=media.max_total_bytes,
            max_file_bytes=media.max_file_bytes,
            ttl_seconds=media.ttl_seconds,
            clock=clock,
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.instances: dict[str, Provider] = {}
        self.kinds: dict[str, ProviderKind] = {}
        self._routes: dict[str, Route] = {}
        # Routes with an instance at either end, per instance: ingest reads them for every
        # event, and a gateway with many portals has many routes, few of them per instance.
        self._routes_by_instance: dict[str, list[Route]] = {}
        self._states: dict[str, AccountState] = {}
        self.instance_states: dict[str, InstanceState] = {}
        self.deliverer: Deliverer | None = None
        self.shared = SharedState(
            self.store, self._shared_changed, poll_interval=settings.state_check_seconds
        )
        self.unrouted = Unrouted(
            self.store,
            routes=lambda: list(self._routes.values()),
            planner=self._plan,
            notify=self.notify,
            wake=self.wake,
            clock=clock,
            max_age=settings.hold_unrouted_days * 86400,
        )
        self._janitor: asyncio.Task[None] | None = None
        self.ready = False
        self.problems: list[str] = []
        # Looked up once: the hook is called for every message on the hot path.
        self._observers = self.host.hook.observe.get_hookimpls()
        self._filters = self.host.hook.filter_message.get_hookimpls()
        self._build_instances()

    # construction ----------------------------------------------------------------------
    def _build_instances(self) -> None:
        providers = self.host.providers or self.host.collect_providers()
        for kind, table in (("channel", self.settings.channels), ("crm", self.settings.crms)):
            for name, instance in table.items():
                cls = providers[instance.provider]
                state = self.instance_states[name] = InstanceState(self.store, f"instance:{name}")
                context = InstanceContext(
                    name=name,
                    config=instance.options,
                    http=self.http,
                    state=state,
                    hub=self,
                    media=self.media,
                    fetcher=self.fetcher,
                    public_url=self.settings.public_url,
                )
                self.instances[name] = cls(context)
                self.kinds[name] = kind  # type: ignore[assignment]
        for route in self.settings.routes:
            self._routes[route.name] = Route(
                name=route.name,
                channel=route.channel,
                crm=route.crm,
                target=route.target,
                direction=route.direction,
            )

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # The versions first, then the copies: a change in between is seen at the first check.
        await self.shared.start()
        await self._load_routes()
        await self._load_account_states()
        retry = self.settings.retry
        workers = self.settings.workers
        self.deliverer = Deliverer(
            store=self.store,
            providers=self.instances,
            routes=lambda: self._routes,
            retry=RetryPolicy(retry.max_attempts, retry.base_delay, retry.max_delay, retry.jitter),
            concurrency=workers.concurrency,
            lease_seconds=workers.lease_seconds,
            poll_interval=workers.poll_interval,
            clock=self.clock,
            notify=self.notify,
            owner=self.owner,
        )
        for name, provider in self.instances.items():
            try:
                await provider.start()
            except Exception as exc:
                # One instance that cannot reach its provider must not stop the others;
                # its jobs wait in the queue and /readyz says what is wrong.
                log.exception("instance %s failed to start", name, extra={"instance": name})
                self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
                await self._set_state(name, AccountState(AccountStatus.ERROR, detail=str(exc)))
        await self.deliverer.start()
        # Work enqueued by other processes sharing the store (PostgreSQL) wakes us too, and
        # so do changes of shared state (routes, installs, tokens) made anywhere.
        await self.store.subscribe(self._heard)
        self.deliverer.wake()
        self.unrouted.start()
        self._janitor = asyncio.create_task(self._sweep_media(), name="media-sweep")
        await _call_each(self.host.hook.startup, gateway=self)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._janitor is not None:
            self._janitor.cancel()
            await asyncio.gather(self._janitor, return_exceptions=True)
        await _call_each(self.host.hook.shutdown, gateway=self)
        await self.unrouted.stop()
        await self.shared.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()
        for name, provider in self.instances.items():
            try:
                await provider.stop()
            except Exception:
                log.exception("instance %s failed to stop", name, extra={"instance": name})
        await self.store.close()
        if self._own_http:
            await self.http.aclose()

    async def housekeep(self) -> None:
        """Expired media go, and events past their retention are forgotten."""
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

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    # ingest ----------------------------------------------------------------------------
    async def ingest(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        """Persist events from `instance` with their jobs; True for each one that was new."""
        routable: list[InboundEvent] = []
        for inbound in events:
            if isinstance(inbound.event, AccountState):
                await self._set_state(instance, inbound.event)
            else:
                routable.append(inbound)
        if not routable:
            return [True] * len(events)
        routes = self._routes_by_instance.get(instance)
        if routes is None:
            routes = [r for r in self._routes.values() if instance in (r.channel, r.crm)]
            self._routes_by_instance[instance] = routes
        message_filter = self._filter if self._filters else None
        items = [
            plan(instance, inbound, routes, message_filter, self._wants_statuses)
            for inbound in routable
        ]
        ids = await self.store.ingest(items, self.clock())
        fresh: dict[int, bool] = {}
        destinations: set[str] = set()
        for inbound, item, event_id in zip(routable, items, ids, strict=True):
            new = event_id is not None
            fresh[id(inbound)] = new
            native = getattr(inbound.event, "native_id", None)
            self.notify(
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
            self.wake(destination)
        # One answer per event, in the caller's order (account states are always taken).
        return [fresh.get(id(inbound), True) for inbound in events]

    emit = ingest

    def _plan(self, instance: str, inbound: InboundEvent) -> IngestItem:
        """Plan one event with the current routes (held messages, when released)."""
        routes = [r for r in self._routes.values() if instance in (r.channel, r.crm)]
        message_filter = self._filter if self._filters else None
        return plan(instance, inbound, routes, message_filter, self._wants_statuses)

    def _held(self, instance: str, inbound: InboundEvent, native: str | None) -> None:
        where = f"{instance} ({inbound.target})" if inbound.target else instance
        self.notify(
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
        for result in self.host.hook.filter_message(message=message, route=route, source=source):
            if result is False:
                return None
            if isinstance(result, Message):
                message = result
        return message

    def _wants_statuses(self, instance: str) -> bool:
        provider = self.instances.get(instance)
        return provider is not None and provider.capabilities.wants_statuses

    # observations ----------------------------------------------------------------------
    def notify(self, observation: Observation) -> None:
        """Count, log and hand an observation to the `observe` hook."""
        metrics = self.metrics
        detail = observation.detail
        kind = str(detail.get("kind", ""))
        where = observation.instance or ""
        if observation.type == "accepted":
            metrics.inc("gateway_events_received_total", instance=where)
        elif observation.type == "duplicate":
            metrics.inc("gateway_events_duplicate_total", instance=where)
        elif observation.type == "rejected":
            metrics.inc(
                "gateway_webhooks_rejected_total", instance=where, reason=str(detail.get("reason"))
            )
        elif observation.type == "delivered":
            metrics.inc("gateway_jobs_delivered_total", destination=where, kind=kind)
            metrics.observe(
                "gateway_delivery_latency_seconds", float(detail["latency"]), destination=where
            )
        elif observation.type == "retried":
            metrics.inc("gateway_jobs_retried_total", destination=where, kind=kind)
        elif observation.type == "dead_lettered":
            metrics.inc("gateway_jobs_dead_lettered_total", destination=where, kind=kind)
        elif observation.type == "reconciled":
            landed = "yes" if detail.get("landed") else "no"
            metrics.inc("gateway_sends_reconciled_total", destination=where, landed=landed)
        # One line per message at INFO would cost more than ingesting it; counts are metrics.
        level = _LOG_LEVELS.get(observation.type, logging.INFO)
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s",
                observation.type,
                " ".join(f"{k}={v}" for k, v in detail.items()),
                extra={
                    "instance": observation.instance,
                    "route": observation.route,
                    "message_id": observation.message_id,
                    "job_id": observation.job_id,
                },
            )
        for impl in self._observers:
            try:
                impl.function(observation=observation)
            except Exception:
                log.exception("observe hook of plugin %s failed", impl.plugin_name)

    async def _set_state(self, instance: str, state: AccountState) -> None:
        previous = self._states.get(instance)
        self._show_state(instance, state)
        if previous != state:
            # The store is where every process reads account states (`gateway status` too).
            await self.store.kv_put(ACCOUNTS, instance, _state_json(state))
            await self.store.bump([ACCOUNTS])

    def _show_state(self, instance: str, state: AccountState) -> None:
        previous = self._states.get(instance)
        self._states[instance] = state
        for status in AccountStatus:
            self.metrics.set(
                "gateway_account_state",
                1.0 if status == state.status else 0.0,
                instance=instance,
                state=status.value,
            )
        if previous is None or previous.status != state.status:
            self.notify(
                Observation(
                    "account_state",
                    instance,
                    detail={"state": state.status.value, "detail": state.detail or ""},
                )
            )

    # Hub -------------------------------------------------------------------------------
    def instance_names(self, kind: ProviderKind | None = None) -> list[str]:
        return [name for name, k in self.kinds.items() if kind is None or k == kind]

    async def account_state(self, instance: str) -> AccountState:
        provider = self.instances[instance]
        try:
            state = await provider.account_state()
        except Exception as exc:
            log.warning("account state of %s unavailable: %s", instance, exc)
            return self._states.get(instance, AccountState(AccountStatus.UNKNOWN, str(exc)))
        if state.status is AccountStatus.UNKNOWN and instance in self._states:
            return self._states[instance]
        await self._set_state(instance, state)
        return state

    async def routes(self) -> list[Route]:
        return list(self._routes.values())

    def route_map(self) -> Mapping[str, Route]:
        return self._routes

    async def add_route(self, route: Route) -> None:
        for name in (route.channel, route.crm):
            if name not in self.instances:
                raise ValueError(f"no instance named {name!r}")
        stored = StoredRoute(route.name, route.channel, route.crm, route.target, route.direction)
        await self.store.save_route(stored)
        self._routes[route.name] = _route_from_stored(stored)
        self._routes_by_instance.clear()
        self.unrouted.poke()

    async def remove_route(self, name: str) -> None:
        await self.store.delete_route(name)
        self._routes.pop(name, None)
        self._routes_by_instance.clear()

    # shared state ----------------------------------------------------------------------
    def _heard(self, what: str | None) -> None:
        """The store's news: a destination with work, or a change of shared state."""
        if what == STATE_CHANGED or what is None:
            self.shared.poke()
        if what != STATE_CHANGED:
            self.wake(what)

    async def _shared_changed(self, scope: str) -> None:
        if scope == "routes":
            await self._load_routes()
            self.unrouted.poke()
        elif scope == "held":
            self.unrouted.poke()
        elif scope == ACCOUNTS:
            await self._load_account_states()
        elif (state := self.instance_states.get(scope.removeprefix("instance:"))) is not None:
            state.generation += 1

    async def _load_routes(self) -> None:
        """The routes of settings.toml (less any a portal switched off), then the store's."""
        routes = {name: r for name, r in self._routes.items() if r.origin == "settings"}
        for stored in await self.store.load_routes():
            routes.setdefault(stored.name, _route_from_stored(stored))
        # In place: the deliverer and admin views hold this mapping.
        self._routes.clear()
        self._routes.update(routes)
        self._routes_by_instance.clear()

    async def _load_account_states(self) -> None:
        for instance, value in await self.store.kv_items(ACCOUNTS):
            state = _state_from_json(value)
            if instance in self.instances and state is not None:
                self._show_state(instance, state)

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        return await self.store.lookup_by_destination(instance, native_id) is not None

    def conversation_for_phone(self, instance: str, phone: str) -> str:
        provider = self.instances.get(instance)
        if not isinstance(provider, ChannelProvider):
            raise KeyError(f"no channel named {instance!r}")
        return provider.conversation_for_phone(phone_digits(phone))

    async def message_templates(self, instance: str) -> list[MessageTemplate]:
        provider = self.instances.get(instance)
        if not isinstance(provider, ChannelProvider):
            return []
        return await provider.message_templates()

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        base = f"{self.settings.public_url.rstrip('/')}/webhooks/{instance}"
        return f"{base}/{subpath.lstrip('/')}" if subpath else base

    def wake(self, destination: str | None = None) -> None:
        if self.deliverer is not None:
            self.deliverer.wake(destination)

    # admin views -----------------------------------------------------------------------
    async def instances_info(self) -> list[dict[str, Any]]:
        info = []
        for name, provider in self.instances.items():
            state = await self.account_state(name)
            info.append(
                {
                    "name": name,
                    "kind": self.kinds[name],
                    "provider": provider.name,
                    "state": state.status.value,
                    "detail": state.detail,
                    "has_qr": state.qr is not None,
                    "webhook_url": self.webhook_url(name),
                }
            )
        return info

    async def routes_info(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "channel": r.channel,
                "crm": r.crm,
                "target": r.target,
                "direction": r.direction,
                "origin": r.origin,
            }
            for r in self._routes.values()
        ]

    async def plugins_info(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "module": r.module,
                "loaded": r.loaded,
                "error": r.error,
                "providers": r.providers,
            }
            for r in self.host.reports
        ]


def _media_secret(directory: Path) -> bytes:
    """The key that names media files; kept beside them so links survive a restart."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # Processes sharing the folder (`--workers N`) start together: each writes a key of
        # its own aside, the first link wins, and all read that one, never a half-written file.
        draft = directory / f".secret.{os.getpid()}.{secrets.token_hex(4)}"
        with open(draft, "xb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secrets.token_bytes(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
        return path.read_bytes()


def _state_json(state: AccountState) -> JSON:
    return {"status": state.status.value, "detail": state.detail}


def _state_from_json(value: JSON) -> AccountState | None:
    if not isinstance(value, dict):
        return None
    try:
        status = AccountStatus(str(value.get("status")))
    except ValueError:
        return None
    detail = value.get("detail")
    return AccountState(status, detail if isinstance(detail, str) else None)


def _route_from_stored(stored: StoredRoute) -> Route:
    direction = stored.direction if stored.direction in ("both", "inbound", "outbound") else "both"
    return Route(
        name=stored.name,
        channel=stored.channel,
        crm=stored.crm,
        target=stored.target,
        direction=direction,  # type: ignore[arg-type]
        origin="store",
    )


async def _call_each(hook: Any, **kwargs: Any) -> None:
    """Call every implementation of a lifecycle hook; one failing plugin is logged by name."""
    for impl in hook.get_hookimpls():
        try:
            result = impl.function(**kwargs)
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("%s hook of plugin %s failed", hook.name, impl.plugin_name)
