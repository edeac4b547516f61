"""Fault injection: the failures a real portal produces, on demand.

```
portal.faults.fail_next("imconnector.send.messages", kind="503")   # next matching call fails
portal.faults.fail_next(kind="html502", count=3)                   # next 3 calls, any method
portal.faults.fail_next(kind="timeout", delay=5.0)                 # takes effect, answers 5 s late
portal.faults.fail_next("oauth.token", kind="503")                 # the OAuth token endpoint
portal.faults.slow(0.2)                                            # every answer waits 0.2 s
portal.faults.block_method("imconnector.send.messages", seconds=600)  # 429 OPERATION_TIME_LIMIT
portal.faults.payment_required = True                              # OAuth answers PAYMENT_REQUIRED
portal.move_domain("new.bitrix24.com")                             # old domain answers 302
```

Kinds: `503` QUERY_LIMIT_EXCEEDED, `429` OPERATION_TIME_LIMIT, `500` INTERNAL_SERVER_ERROR,
`html502` nginx HTML page, `expired_token` (also expires the presented token, so only a
refresh helps), `invalid_token`, `insufficient_scope`, `redirect` (302 to the same URL on
the current domain), `timeout` (the call is processed, then the answer is held `delay`
seconds — the ambiguous case where the client gave up but the side effect happened).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

FaultKind = Literal[
    "503",
    "429",
    "500",
    "html502",
    "expired_token",
    "invalid_token",
    "insufficient_scope",
    "redirect",
    "timeout",
]
OAUTH_METHOD = "oauth.token"
_OAUTH_KINDS = {"503", "500", "html502", "timeout"}


@dataclass
class Fault:
    kind: FaultKind
    method: str | None
    delay: float


class Faults:
    """Queued one-shot failures, per-method slowness and operation-time blocks."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.queued: list[Fault] = []
        self._slow: dict[str | None, float] = {}
        self._blocked: dict[str, float] = {}
        self.payment_required = False

    def fail_next(
        self,
        method: str | None = None,
        *,
        count: int = 1,
        kind: FaultKind = "503",
        delay: float = 30.0,
    ) -> None:
        """Fail the next `count` calls of `method` (None: any REST method, not OAuth)."""
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}")
        name = method.lower() if method else None
        if name == OAUTH_METHOD and kind not in _OAUTH_KINDS:
            raise ValueError(f"the OAuth endpoint supports only {sorted(_OAUTH_KINDS)}")
        self.queued.extend(Fault(kind, name, delay) for _ in range(count))

    def slow(self, seconds: float, *, method: str | None = None) -> None:
        """Hold every answer (of `method`, or all) `seconds` after processing; 0 stops."""
        self._slow[method.lower() if method else None] = seconds

    def block_method(self, method: str, *, seconds: float = 600.0) -> None:
        """Answer 429 OPERATION_TIME_LIMIT for `method` for `seconds` of the portal clock."""
        self._blocked[method.lower()] = self._clock() + seconds

    def clear(self) -> None:
        self.queued.clear()
        self._slow.clear()
        self._blocked.clear()
        self.payment_required = False

    def take(self, method: str) -> Fault | None:
        for index, fault in enumerate(self.queued):
            wildcard = fault.method is None and method != OAUTH_METHOD
            if wildcard or fault.method == method:
                return self.queued.pop(index)
        return None

    def delay_for(self, method: str) -> float:
        return self._slow.get(method, self._slow.get(None, 0.0))

    def blocked_until(self, method: str) -> float | None:
        """Clock time when the block on `method` lifts, or None if not blocked."""
        until = self._blocked.get(method)
        if until is None or until <= self._clock():
            return None
        return until
