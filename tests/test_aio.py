"""Background loops stop when cancelled, even when the cancel meets their wake-up.

On Python 3.11 `asyncio.wait_for` swallowed a cancellation that arrived in the loop turn its
awaited event was set: the shared-state watcher then polled on after `stop()` cancelled it,
and the gateway's shutdown awaited it forever (the full suite hung in a security test's
teardown). These tests cancel at exactly that moment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.aio import stop_tasks, wait_event
from gateway.errors import ShutdownError
from gateway.shared_state import SharedState

pytestmark = pytest.mark.anyio


async def settle() -> None:
    """Let the event's waiter wake (scheduled), but not the task awaiting it."""
    await asyncio.sleep(0)


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10.0) is True


async def test_a_loop_cancelled_as_its_event_is_set_stops() -> None:
    poke = asyncio.Event()
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            await wait_event(poke, 0.5)
            poke.clear()
            turns += 1

    task = asyncio.create_task(loop(), name="poked-loop")
    await settle()
    poke.set()
    await settle()
    async with asyncio.timeout(5):
        await stop_tasks([task], within=2.0)
    assert task.cancelled()


async def test_the_shared_state_watcher_stops_when_poked_as_it_is_cancelled() -> None:
    class Versions:
        async def versions(self) -> dict[str, int]:
            return {"routes": 1}

    async def handler(scope: str) -> None:
        pass

    store: Any = Versions()
    shared = SharedState(store, handler, poll_interval=0.5)
    await shared.start()
    [watcher] = [t for t in asyncio.all_tasks() if t.get_name() == "shared-state"]
    await settle()
    shared.poke()
    await settle()
    async with asyncio.timeout(5) as bound:
        await shared.stop()
    assert not bound.expired(), "stop() waited on a watcher that ignored its cancellation"
    assert watcher.cancelled()


async def test_a_task_that_ignores_its_cancellation_is_named() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # what a swallowed cancellation looks like from outside

    task = asyncio.create_task(stubborn(), name="stubborn")
    await settle()
    with pytest.raises(ShutdownError, match="stubborn"):
        await stop_tasks([task], within=0.05)
    release.set()
    await task


async def test_what_a_stopped_task_raised_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="broken")
    await settle()
    with caplog.at_level(logging.ERROR, logger="gateway"):
        await stop_tasks([task])
    assert "broken" in caplog.text and "boom" in caplog.text
