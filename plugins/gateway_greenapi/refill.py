"""Gap recovery from GREEN-API's journals, and the history a linked number brings along.

GREEN keeps undelivered notifications for 24 hours only, and a phone that was offline or
logged out syncs its messages into the journals rather than the notification queue. So the
instance keeps a cursor in its state, `refill:seen`: the moment up to which everything is
known to have been received (the gateway running and the number connected), moved forward
every `HEARTBEAT_SECONDS`. At start, and whenever the number is connected again after it was
not, what the journals hold since the cursor (less `OVERLAP_SECONDS`, as journals lag) is
emitted; webhooks that bring the same messages later are duplicates by their dedupe key.
The first start only sets the cursor: importing an account's whole past would flood the CRM
(that is what linking with history is for).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway import DeliveryError, Hub, InboundEvent, PermanentError, ProviderState
from gateway_greenapi.client import GreenClient
from gateway_greenapi.journal import journal_events, minutes_since
from gateway_greenapi.notifications import Options
from gateway_greenapi.pacing import Pacer

log = logging.getLogger("gateway_greenapi")

CURSOR_KEY = "refill:seen"
#: GREEN: "The appearance of messages in the journal may take up to 2 minutes."
OVERLAP_SECONDS = 300.0
HEARTBEAT_SECONDS = 60.0
EMIT_CHUNK = 100
ATTEMPTS = 5

Sleep = Callable[[float], Awaitable[None]]


class Refiller:
    """Reads the journals of one instance; refills gaps and serves `history(since)`."""

    def __init__(
        self,
        *,
        instance: str,
        client: GreenClient,
        options: Options,
        state: ProviderState,
        hub: Hub,
        pacer: Pacer,
        max_hours: float,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.instance = instance
        self.client = client
        self.options = options
        self.state = state
        self.hub = hub
        self.pacer = pacer
        self.max_seconds = max_hours * 3600.0
        self.clock = clock
        self.sleep = sleep
        #: False while the number is known not to be connected: the cursor then stays put.
        self.connected = True
        self._lock = asyncio.Lock()

    async def history(self, since: float) -> list[InboundEvent]:
        """The messages of every chat since `since` (unix seconds), oldest first."""
        minutes = minutes_since(since, self.clock())
        journals: list[list[Any]] = []
        directions = ["Incoming"]
        if self.options.mirror_phone_messages:
            # The gateway's own sends are never routed back; only what was typed on the phone.
            directions.append("Outgoing")
        for direction in directions:
            await self.pacer.wait()
            journals.append(await self.client.last_messages(direction, minutes))
        return journal_events(journals, self.options, since=since)

    async def refill(self) -> int:
        """Emit what the journals hold since the cursor; how many events were new."""
        async with self._lock:
            stored = await self.state.get(CURSOR_KEY)
            now = self.clock()
            if not isinstance(stored, int | float) or isinstance(stored, bool):
                await self.state.put(CURSOR_KEY, now)
                return 0
            since = max(float(stored) - OVERLAP_SECONDS, now - self.max_seconds)
            events = await self.history(since)
            new = await self.emit(events)
            if self.connected:
                await self.state.put(CURSOR_KEY, now)
        if new:
            log.info("%s: refilled %d messages missed while away", self.instance, new)
        return new

    async def emit(self, events: Sequence[InboundEvent]) -> int:
        new = 0
        for start in range(0, len(events), EMIT_CHUNK):
            chunk = events[start : start + EMIT_CHUNK]
            new += sum(await self.hub.emit(self.instance, chunk))
        return new

    async def refill_retrying(self) -> None:
        """`refill`, retried with backoff on temporary failures, at most `ATTEMPTS` times."""
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self.refill()
                return
            except PermanentError as exc:
                log.error("%s: refill from the journals failed: %s", self.instance, exc)
                return
            except DeliveryError as exc:
                if attempt == ATTEMPTS:
                    what = "%s: refill failed %d times, giving up: %s"
                    log.error(what, self.instance, attempt, exc)
                    return
                log.warning("%s: refill failed, again in %.0f s: %s", self.instance, delay, exc)
            await self.sleep(delay)
            delay = min(60.0, delay * 2)

    async def beat(self) -> None:
        """Move the cursor to now, unless the number is known not to be connected."""
        if self.connected:
            await self.state.put(CURSOR_KEY, self.clock())

    async def run(self) -> None:
        """At start: refill; then keep the cursor fresh until cancelled."""
        await self.refill_retrying()
        while True:
            await self.sleep(HEARTBEAT_SECONDS)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: cannot store the refill cursor", self.instance)
