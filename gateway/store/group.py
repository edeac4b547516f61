"""Group commit across callers: what arrives within one turn of the event loop is stored
with one call to the backend (one transaction, one commit), and each caller hears back
only once that call has returned, i.e. after the commit.

`TickGroup(start)`: `await group.submit(request)` queues `request`; the first submission
of a turn schedules the flush with `loop.call_soon`, so it runs after every callback that
is ready in this turn (the webhooks whose bodies arrived together). The flush hands the
whole batch to `start(requests)`, which returns a future (the SQLite writer's own, so no
task is made per batch) of one result per request, each a value or the exception for that
request alone. If that future fails (the transaction or its commit failed), every caller
of the batch gets its exception: nothing of theirs is stored.

A caller cancelled while its batch runs is not un-stored: like any write in flight, it
lands or not as a whole with its group, and a redelivery is deduplicated.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")


class TickGroup(Generic[R, T]):
    """Batches `submit` calls of one loop turn into one `start` call."""

    def __init__(self, start: Callable[[Sequence[R]], asyncio.Future[Sequence[T | BaseException]]]):
        self._start = start
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._scheduled = False
        self._running: set[asyncio.Future[Sequence[T | BaseException]]] = set()
        self.batches = 0  # batches handed to `start`; lets tests observe the grouping

    async def submit(self, request: R) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((request, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        batch = [(request, future) for request, future in batch if not future.done()]
        if not batch:
            return
        self.batches += 1
        try:
            running = self._start([request for request, _ in batch])
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        self._running.add(running)
        running.add_done_callback(functools.partial(self._complete, batch))

    def _complete(
        self,
        batch: list[tuple[R, asyncio.Future[T]]],
        running: asyncio.Future[Sequence[T | BaseException]],
    ) -> None:
        self._running.discard(running)
        if running.cancelled():
            for _, future in batch:
                future.cancel()
            return
        failure = running.exception()
        if failure is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, future), result in zip(batch, running.result(), strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for the batches already handed to the backend (before closing it)."""
        while self._pending or self._running:
            if self._pending and not self._scheduled:
                self._flush()
            await asyncio.gather(*self._running, return_exceptions=True)
            await asyncio.sleep(0)
