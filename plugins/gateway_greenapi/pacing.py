"""Spacing API sends to `messages_per_second` for one instance.

GREEN-API queues sends and drains them at `delaySendMessagesMilliseconds`, but its methods
also refuse bursts with HTTP 429; pacing on our side keeps a busy CRM from earning those.
Each send books the next free slot and waits for it; with the delivery slots of one
instance the wait is at most `concurrency / rate` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """At most `rate` calls a second (0 = no limit), on `clock`, waiting with `sleep`."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = -float("inf")

    def book(self) -> float:
        """Reserve the next slot; seconds to wait for it."""
        if self.interval <= 0:
            return 0.0
        now = self.clock()
        start = max(now, self._next)
        self._next = start + self.interval
        return start - now

    async def wait(self) -> None:
        delay = self.book()
        if delay > 0:
            await self.sleep(delay)
