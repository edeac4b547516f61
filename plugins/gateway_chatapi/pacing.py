"""Spacing sends out to `messages_per_second` per instance.

Chat API queues what it is given and sends it at WhatsApp Web's pace, so the limit here only
keeps a burst (a backlog after downtime, several delivery slots at once) from earning
HTTP 429s. Each call books the next free slot; one far in the future is refused, so the
job is retried later instead of holding a delivery slot while it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """At most `rate` calls a second, evenly spaced; `rate` 0 means no limit."""

    def __init__(
        self,
        rate: float,
        *,
        max_wait: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.max_wait = max_wait
        self.clock = clock
        self._next = 0.0

    def book(self) -> float | None:
        """Seconds to wait before the call may go, or None when the queue is too long."""
        if self.interval == 0.0:
            return 0.0
        now = self.clock()
        start = max(now, self._next)
        wait = start - now
        if wait > self.max_wait:
            return None
        self._next = start + self.interval
        return wait

    def retry_in(self) -> float:
        """When a refused call might find a slot."""
        return max(0.0, self._next - self.clock() - self.max_wait)

    async def wait(self) -> bool:
        """Wait for a slot; False (without waiting) when none is near enough."""
        wait = self.book()
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True
