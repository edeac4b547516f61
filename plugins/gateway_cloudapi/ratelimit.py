"""Pacing sends under Meta's two limits, so they are held briefly instead of refused.

Meta allows a number about 80 messages a second (more after an upgrade; inbound traffic
counts too, so a little headroom is wise) and one message every ~6 s to the same customer
(the "pair rate"); going faster earns 130429 or 131056. `SendPacer` books a time slot for
each send: when the slot is near it says how long to hold; when it is far the send should be
retried later rather than occupy a delivery slot for seconds. One pacer per instance and
process; several processes sharing a number must share its rate between them in settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Booking:
    """`wait` seconds until the send may go; `booked` False when it was too far off."""

    wait: float
    booked: bool


class SendPacer:
    """A token bucket per number and a minimum interval per recipient, on `clock`."""

    def __init__(
        self,
        rate: float,
        pair_interval: float,
        *,
        max_hold: float,
        clock: Callable[[], float] = time.monotonic,
        burst: float | None = None,
    ) -> None:
        self.rate = rate
        self.pair_interval = pair_interval
        self.max_hold = max_hold
        self.clock = clock
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._updated = clock()
        # recipient -> earliest time the next send to them may go
        self._next_pair: dict[str, float] = {}

    def book(self, recipient: str) -> Booking:
        """Reserve the earliest slot for one send to `recipient` unless it is too far off."""
        now = self.clock()
        self._refill(now)
        start = max(now, self._next_pair.get(recipient, now))
        # Tokens at `start` (the bucket keeps filling while we wait for the pair slot).
        tokens_then = min(self.capacity, self._tokens + (start - now) * self.rate)
        if tokens_then < 1.0:
            start += (1.0 - tokens_then) / self.rate
        wait = start - now
        if wait > self.max_hold:
            return Booking(wait, booked=False)
        # Spend the token at `start`: the balance may go negative now and refills to it.
        self._tokens -= 1.0
        if self.pair_interval > 0:
            self._next_pair[recipient] = start + self.pair_interval
        self._forget(now)
        return Booking(wait, booked=True)

    def penalize(self, recipient: str, seconds: float) -> None:
        """Meta said 131056 anyway (another process, or a burst we did not see)."""
        self._next_pair[recipient] = max(
            self._next_pair.get(recipient, 0.0), self.clock() + seconds
        )

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now

    def _forget(self, now: float) -> None:
        # Without this the map grows by one entry per customer ever written to.
        if len(self._next_pair) > 10_000:
            self._next_pair = {k: v for k, v in self._next_pair.items() if v > now}
