"""Bounded waits that never lose a cancellation, stopping background tasks, and one
asyncio lock per name (`LocksByName`).

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives in the same loop
turn as the awaited thing finishing (CPython gh-86296, fixed in 3.12): it returns the
result and the task carries on as if never cancelled. A background loop built on it (wait
for a poke or the poll interval, then look) then ignores the `cancel()` of shutdown and
`stop()` awaits it forever. `asyncio.timeout` keeps count of cancellations and has no such
race, so the gateway waits with it (ruff bans `asyncio.wait_for`), and `stop_tasks` puts a
bound on the wait for a cancelled task, so a task that still ignores it is an error naming
it rather than a process that never exits.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import Any

from gateway.errors import ShutdownError

log = logging.getLogger("gateway")

#: How long a cancelled background task may take to end (its `finally` blocks run).
STOP_SECONDS = 10.0


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set (True) or `seconds` passed (False); cancellable."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], within: float = STOP_SECONDS) -> None:
    """Cancel `tasks` and wait until they ended; `ShutdownError` naming those that did not
    within `within` seconds. What a task raised (other than its cancellation) is logged."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    stuck: set[asyncio.Task[Any]] = set()
    if any(not task.done() for task in tasks):
        _, stuck = await asyncio.wait(tasks, timeout=within)
    for task in tasks:
        if task in stuck or task.cancelled():
            continue
        error = task.exception()
        if error is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)
    if stuck:
        names = ", ".join(sorted(task.get_name() for task in stuck))
        raise ShutdownError(
            f"background task(s) {names} still running {within:g} s after being cancelled"
        )


class LocksByName:
    """One asyncio lock per name, kept while a task holds or waits for it: the waiters of
    a process queue here, in order, before one of them takes a lock across processes."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __getitem__(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock
