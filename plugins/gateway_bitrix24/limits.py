"""Staying under a portal's REST limits from the client side.

Bitrix24 counts HTTP requests per portal in a leaky bucket (2 per second drained, 50 deep;
Enterprise 5 and 250) and answers `503 QUERY_LIMIT_EXCEEDED` past it. The gateway keeps the
same bucket per portal, as a GCRA schedule: each request gets the earliest time the portal
would accept it. A short wait is slept; a longer one becomes a `TemporaryError` with
`retry_after`, so a delivery slot is never held for long. A method the portal blocked with
`429 OPERATION_TIME_LIMIT` is paused until `operating_reset_at`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway import Throttled


class Bucket:
    """The portal's leaky bucket as seen from here: `rate` per second, `burst` deep."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.interval = 1.0 / rate
        self.burst = max(1, burst)
        self.clock = clock
        self._tat = clock()  # "theoretical arrival time": when the bucket is empty again

    def wait_time(self) -> float:
        """Seconds until a request would be accepted (0 when now)."""
        now = self.clock()
        tat = max(self._tat, now)
        return max(0.0, tat - now - (self.burst - 1) * self.interval)

    def reserve(self, max_wait: float) -> float | None:
        """Take a slot; the seconds to wait for it, or None (nothing taken) past `max_wait`."""
        wait = self.wait_time()
        if wait > max_wait:
            return None
        self._tat = max(self._tat, self.clock()) + self.interval
        return wait

    def saturate(self) -> None:
        """The portal said the bucket is full (a 503): believe it."""
        self._tat = max(self._tat, self.clock() + self.burst * self.interval)

    @property
    def level(self) -> float:
        """Requests currently in the bucket (for tests and metrics)."""
        return max(0.0, self._tat - self.clock()) / self.interval


class Limits:
    """Buckets and method pauses of every portal of one instance."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_wait: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        self._buckets: dict[str, Bucket] = {}
        self._paused: dict[tuple[str, str], float] = {}
        # Methods blocked by a batch answer, which does not say until when: the next call
        # goes alone, as a plain request, so its answer does (see `probing`).
        self._probing: set[tuple[str, str]] = set()

    def bucket(self, member_id: str) -> Bucket:
        bucket = self._buckets.get(member_id)
        if bucket is None:
            bucket = self._buckets[member_id] = Bucket(self.rate, self.burst, self.clock)
        return bucket

    async def acquire(self, member_id: str) -> None:
        """Wait for a request slot, or raise `TemporaryError` if it is too far off."""
        bucket = self.bucket(member_id)
        wait = bucket.reserve(self.max_wait)
        if wait is None:
            raise Throttled(
                "request rate limit of the portal reached (client-side bucket)",
                code="RATE_LIMITED",
                retry_after=bucket.wait_time(),
            )
        if wait > 0:
            await self.sleep(wait)

    def saturate(self, member_id: str) -> float:
        """After a 503 QUERY_LIMIT_EXCEEDED; returns the seconds to back off."""
        bucket = self.bucket(member_id)
        bucket.saturate()
        return max(bucket.wait_time(), bucket.interval)

    def pause(self, member_id: str, method: str, seconds: float, *, probe: bool = False) -> None:
        """Block `method` for `seconds`; with `probe`, the end is a guess and the next call
        of the method should be a plain one that learns the real end."""
        until = self.clock() + max(1.0, seconds)
        key = (member_id, method.lower())
        self._paused[key] = max(until, self._paused.get(key, 0.0))
        if probe:
            self._probing.add(key)

    def probing(self, member_id: str, method: str) -> bool:
        return (member_id, method.lower()) in self._probing

    def resume(self, member_id: str, method: str) -> None:
        """A plain call of `method` succeeded: batch it again."""
        self._probing.discard((member_id, method.lower()))

    def paused_for(self, member_id: str, method: str) -> float | None:
        """Seconds `method` stays blocked on this portal, or None."""
        key = (member_id, method.lower())
        until = self._paused.get(key)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self._paused[key]
            return None
        return left
