"""Request bodies of webhooks: read whole, bounded in size and in time.

The time bound is one timer for all requests rather than one per request (`asyncio.timeout`
schedules and cancels a timer handle for every webhook): `BodyDeadlines` keeps each
reading task with its deadline and one timer, ticking a few times per timeout while any
body is being read, cancels the tasks that overstayed. A body is thus cut off between one
and 1.25 times its timeout after its reading began.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.errors import BadRequest, WebhookError


class BodyDeadlines:
    """Cancels the tasks that read a body for longer than their deadline."""

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self, seconds: float) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is None:
            return None
        loop = task.get_loop()
        if loop is not self._loop:  # a new loop (tests): the old one's timer is gone
            self._loop, self._timer = loop, None
            self._deadlines.clear()
        self._deadlines[task] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(seconds / 4, self._check, seconds / 4)
        return task

    def leave(self, task: asyncio.Task[object] | None) -> bool:
        """Stop watching `task`; True if it was cancelled for overstaying."""
        if task is None:
            return False
        self._deadlines.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _check(self, interval: float) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
        self._timer = (
            self._loop.call_later(interval, self._check, interval) if self._deadlines else None
        )


async def read_body(
    receive: Receive,
    declared: str | None,
    limit: int,
    deadlines: BodyDeadlines,
    seconds: float,
) -> bytes:
    """The request body from `receive`, refused with 413 past `limit` bytes (`declared`,
    the Content-Length header, or what arrived) before it is all read, and with 408 when it
    did not arrive within `seconds`."""
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise WebhookError(f"body larger than {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    task = deadlines.enter(seconds)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise WebhookError(f"body larger than {limit} bytes", status=413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not deadlines.leave(task):
            raise
        task = None
        if (current := asyncio.current_task()) is not None:
            current.uncancel()
        raise WebhookError(
            f"the request body did not arrive within {seconds:g} seconds", status=408
        ) from None
    finally:
        deadlines.leave(task)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
