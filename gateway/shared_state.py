"""Keeping this process's copies of shared state current.

Routes, account states, held messages and what plugins keep in their instance state live in
the store, the one source of truth every process shares. A process keeps copies in memory
(the route table is read for every webhook), and each copy belongs to a *scope* whose version
the store bumps in the transaction of every change (`Store.versions`). This watcher reads
the versions, a single small query, and hands every scope whose version moved to its
handler, which re-reads that scope:

* at once when told: the store announces its own changes to its subscribers, and on
  PostgreSQL every other process hears of them through LISTEN/NOTIFY within milliseconds;
* at the latest every `poll_interval` seconds otherwise (a lost notification, several
  processes on one SQLite file), so a change reaches every process within about a second.

The webhook path reads only the in-memory copies: it costs no store round trip to know
nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.aio import stop_tasks, wait_event
from gateway.store.base import Store

log = logging.getLogger("gateway")

DEFAULT_POLL_INTERVAL = 0.5

Handler = Callable[[str], Awaitable[None]]


class SharedState:
    """Watches the store's versions and calls the handler of each scope that changed."""

    def __init__(
        self,
        store: Store,
        handler: Handler,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.store = store
        self.handler = handler
        self.poll_interval = poll_interval
        self.known: dict[str, int] = {}
        self.checks = 0
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checked = asyncio.Condition()

    async def start(self) -> None:
        """Take the versions the copies are about to be read at; then watch."""
        self.known = await self.store.versions()
        self._task = asyncio.create_task(self._watch(), name="shared-state")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    def poke(self) -> None:
        """Something may have changed: look now rather than at the next poll."""
        self._poke.set()

    async def check(self) -> list[str]:
        """Read the versions and handle every scope that moved; returns those scopes.

        A scope's known version is taken before its handler re-reads it, so a change that
        lands meanwhile is handled again at the next check, never missed.
        """
        current = await self.store.versions()
        changed = sorted(s for s, v in current.items() if self.known.get(s) != v)
        self.known = current
        # One line per change of routes, installs, tokens, states (held messages have theirs).
        noted = [f"[{scope}@{current[scope]}]" for scope in changed if scope != "held"]
        if noted:
            log.info("shared state changed: %s", " ".join(noted))
        for scope in changed:
            try:
                await self.handler(scope)
            except Exception:
                # The copy stays as it was; forget its version so the next check retries.
                log.exception("could not refresh the shared state %r", scope)
                self.known.pop(scope, None)
        self.checks += 1
        async with self._checked:
            self._checked.notify_all()
        return changed

    async def settled(self) -> None:
        """Wait until a check that started after this call has finished (for tests)."""
        async with self._checked:
            self.poke()
            target = self.checks + 2
            await self._checked.wait_for(lambda: self.checks >= target)

    async def _watch(self) -> None:
        while True:
            await wait_event(self._poke, self.poll_interval)
            self._poke.clear()
            try:
                await self.check()
            except Exception as exc:
                # The store is unreachable: webhooks fail with it; try again shortly.
                log.warning("could not read the shared state's versions: %s", exc)
