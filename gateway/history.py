"""History on link: a channel linked with `days` of history gets what its provider kept of
those days fed into the pipeline, in the customer's order and behind live traffic.

* **Durable.** The request is written to the store (kv namespace `history`, one key per
  route) before anything is fetched and deleted when done, so a restart, in any process
  sharing the store, resumes it (`start`); the store's lock on the route's name keeps two
  processes from feeding it at once.
* **One effect.** A provider's `history(since)` gives each message the dedupe key its webhook
  has, so what was delivered already, or arrives by webhook meanwhile, is a duplicate.
* **Live traffic first.** Events are fed `CHUNK` at a time, and a chunk only when the
  destination's queue holds fewer than `[history] max_queue` ready jobs (live ones count:
  while the line is busy the import waits) and no faster than `messages_per_second`.
  Resuming starts from the timestamp of the last chunk fed.
* **In order.** Providers return the oldest first; among what is not yet delivered the store
  keeps each conversation in the customer's order (by timestamp), and Bitrix24 is given
  the original time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from gateway.aio import stop_tasks
from gateway.errors import DeliveryError, PermanentError
from gateway.models import InboundEvent
from gateway.providers import Provider, Route
from gateway.settings_model import HistorySettings
from gateway.store.base import Store

log = logging.getLogger("gateway")

NAMESPACE = "history"
CHUNK = 20
ATTEMPTS = 6
DAY = 86_400.0

Ingest = Callable[[str, Sequence[InboundEvent]], Awaitable[list[bool]]]
Sleep = Callable[[float], Awaitable[None]]


class HistoryImports:
    """The history imports of one process."""

    def __init__(
        self,
        *,
        store: Store,
        instances: Mapping[str, Provider],
        routes: Callable[[], Mapping[str, Route]],
        ingest: Ingest,
        settings: HistorySettings,
        keep_days: float,
        poll_seconds: float,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.instances = instances
        self.routes = routes
        self.ingest = ingest
        self.settings = settings
        # An event older than the store keeps dedupe keys could be delivered a second time.
        self.max_days = min(settings.max_days, keep_days)
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def default_days(self) -> float:
        return self.settings.days

    async def request(self, route_name: str, days: float | None = None) -> bool:
        """Import the last `days` (default `[history] days`) of `route_name`'s channel;
        False when there is nothing to do (0 days, or a provider that keeps no history)."""
        route = self.routes().get(route_name)
        if route is None:
            raise ValueError(f"no route named {route_name!r}")
        days = self.settings.days if days is None else days
        days = min(max(days, 0.0), self.max_days)
        provider = self.instances.get(route.channel)
        if days <= 0 or provider is None or not provider.capabilities.history:
            return False
        since = self.clock() - days * DAY
        record = {"channel": route.channel, "since": since, "days": days, "fed": 0}
        await self.store.kv_put(NAMESPACE, route_name, record)
        log.info("importing %g days of history of %s for route %s", days, route.channel, route_name)
        self._spawn(route_name)
        return True

    def start(self) -> None:
        """Resume the imports the store still lists (this process or an earlier one)."""
        self._tasks["*"] = asyncio.create_task(self._resume(), name="history:resume")

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        await stop_tasks(tasks)

    async def wait(self) -> None:
        """Until every import started so far is done (tests, `gateway demo`)."""
        while True:
            pending = [t for t in self._tasks.values() if not t.done()]
            if not pending:
                return
            await asyncio.wait(pending)

    def _spawn(self, route_name: str) -> None:
        running = self._tasks.get(route_name)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._run(route_name), name=f"history:{route_name}")
        self._tasks[route_name] = task

    async def _resume(self) -> None:
        for name, _ in await self.store.kv_items(NAMESPACE):
            self._spawn(name)

    async def _run(self, route_name: str) -> None:
        try:
            async with self.store.lock(f"history:{route_name}"):
                await self._import(route_name)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Kept in the store: the next start tries again.
            log.exception("history import for route %s failed", route_name)

    async def _import(self, route_name: str) -> None:
        record = await self.store.kv_get(NAMESPACE, route_name)
        if not isinstance(record, dict):
            return  # done meanwhile, by another process
        route = self.routes().get(route_name)
        provider = self.instances.get(str(record.get("channel")))
        if route is None or provider is None or route.channel != record.get("channel"):
            log.info("history import for route %s dropped: the route changed", route_name)
            await self.store.kv_delete(NAMESPACE, route_name)
            return
        since = float(record["since"])
        events = await self._fetch(provider, route_name, since)
        if events is None:
            await self.store.kv_delete(NAMESPACE, route_name)
            return
        fed = int(record.get("fed", 0))
        new = 0
        for start in range(0, len(events), CHUNK):
            chunk = events[start : start + CHUNK]
            await self._room(route.crm)
            if self.routes().get(route_name) != route:
                # Unlinked meanwhile: the rest would only be held for a route to appear.
                log.info("history import for route %s stopped: the route changed", route_name)
                break
            new += sum(await self.ingest(route.channel, chunk))
            fed += len(chunk)
            stamp = _timestamp(chunk[-1])
            if stamp is not None:
                # A restart fetches again from here; what was fed is a duplicate then.
                progress = {**record, "since": stamp, "fed": fed}
                await self.store.kv_put(NAMESPACE, route_name, progress)
            await self._pace(len(chunk))
        await self.store.kv_delete(NAMESPACE, route_name)
        log.info(
            "history of %s for route %s: %d messages, %d new",
            route.channel,
            route_name,
            len(events),
            new,
        )

    async def _fetch(
        self, provider: Provider, route_name: str, since: float
    ) -> Sequence[InboundEvent] | None:
        """The provider's history since `since`, retried with backoff; None: give up."""
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await provider.history(since)
            except PermanentError as exc:
                log.error("history for route %s cannot be fetched: %s", route_name, exc)
                return None
            except DeliveryError as exc:
                if attempt == ATTEMPTS:
                    raise
                log.warning("history for route %s: %s; again in %.0f s", route_name, exc, delay)
            await self.sleep(delay)
            delay = min(60.0, delay * 2)
        return None

    async def _room(self, destination: str) -> None:
        """Wait while `destination` has `max_queue` or more jobs ready (live ones first)."""
        while True:
            stats = await self.store.stats(self.clock())
            ready = sum(s.ready for s in stats if s.destination == destination)
            if ready < self.settings.max_queue:
                return
            await self.sleep(self.poll_seconds)

    async def _pace(self, count: int) -> None:
        rate = self.settings.messages_per_second
        if rate > 0:
            await self.sleep(count / rate)


def _timestamp(inbound: InboundEvent) -> float | None:
    stamp: Any = getattr(inbound.event, "timestamp", None)
    return float(stamp) if isinstance(stamp, int | float) else None
