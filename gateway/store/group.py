"""Group commit across callers: what arrives within one turn of the event loop is stored
with one call to the backend (one transaction, one commit), and each caller hears back
only once that call has returned, i.e. after the commit.

`TickGroup(run)`: `await group.submit(request)` queues `request`; the first submission of a
turn schedules the flush with `loop.call_soon`, so it runs after every callback that is
ready in this turn (the webhooks whose bodies arrived together). The flush hands the whole
batch to `run(requests)`, which returns one result per request, each a value or the
exception for that request alone. If `run` itself raises (the transaction or its commit
failed), every caller of the batch gets that exception: nothing of theirs is stored.

A caller cancelled while its batch runs is not un-stored: like any write in flight, it
lands or not as a whole with its group, and a redelivery is deduplicated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")


class TickGroup(Generic[R, T]):
    """Batches `submit` calls of one loop turn into one `run` call."""

    def __init__(self, run: Callable[[Sequence[R]], Awaitable[Sequence[T | BaseException]]]):
        self._run = run
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches handed to `run`; lets tests observe the grouping

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
        task = asyncio.get_running_loop().create_task(self._complete(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _complete(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
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
