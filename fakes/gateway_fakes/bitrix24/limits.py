"""The per-portal request-rate limiter (leaky bucket, docs `limits.md`)."""

from __future__ import annotations

from collections.abc import Callable


class LeakyBucket:
    """+1 per HTTP request, drains `rate` per second; over `burst` the request is refused.

    A refused request does not fill the bucket, so a client backing off recovers at
    exactly `rate` requests per second. A batch is one request.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self.level = 0.0
        self._last = clock()

    def hit(self) -> bool:
        now = self._clock()
        self.level = max(0.0, self.level - (now - self._last) * self.rate)
        self._last = now
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True
