"""Wake-ups between processes that share a PostgreSQL store: NOTIFY after commit, LISTEN.

Writers announce the destinations that got work (new jobs, freed leases, replays) *after*
their transaction committed, so a woken worker finds the jobs. The NOTIFY is not sent inside
the writing transaction on purpose: PostgreSQL serializes the commits of notifying
transactions on one database-wide lock, fsync included, which would cap ingest at one
commit per fsync. Announcements queue here and a background task sends whatever has
gathered in one statement, so a burst of webhooks costs a handful of notifies.

Losing one (the process dies between commit and notify, the listener reconnects) costs
latency only: workers still poll every `poll_interval`, and a listener that (re)connects
first wakes everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from gateway.aio import stop_tasks

log = logging.getLogger("gateway.store")

LISTEN_BACKOFF = (0.5, 30.0)
#: How long `close` lets the sender finish the statement it is in before cancelling it.
SENDER_GRACE = 10.0


class Notifier:
    """Sends announcements of one store and runs its listener, if any."""

    def __init__(
        self,
        url: str,
        channel: str,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]],
    ) -> None:
        self.url = url
        self.channel = channel
        self.pool = pool
        self._pending: set[str] = set()
        self._closing = False
        self._ready = asyncio.Event()
        self._sender = asyncio.create_task(self._send(), name="store-notify")
        self._listener: asyncio.Task[None] | None = None

    def announce(self, destinations: Iterable[str]) -> None:
        before = len(self._pending)
        self._pending.update(destinations)
        if len(self._pending) != before:
            self._ready.set()

    def listen(self, callback: Callable[[str | None], None]) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(callback), name="store-listen")

    async def close(self) -> None:
        """Stop listening; send what is still pending (`gateway replay` closes right away)."""
        self._closing = True
        self._ready.set()
        try:
            await stop_tasks([self._listener] if self._listener is not None else [])
            # The sender is not cancelled inside its statement: psycopg then waits for the
            # server to confirm the cancel, which under load outlasted the shutdown's limit.
            # Told to close, it sends what is pending and ends; cancelled only if it hangs.
            await asyncio.wait([self._sender], timeout=SENDER_GRACE)
            await stop_tasks([self._sender])
        finally:
            await self._flush()

    async def _send(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = sorted(self._pending), set()
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "SELECT pg_notify(%s, d) FROM unnest(%s::text[]) AS d", (self.channel, batch)
                )
        except psycopg.Error as exc:
            log.warning("could not tell other processes about new work: %s", exc)

    async def _listen(self, callback: Callable[[str | None], None]) -> None:
        delay = LISTEN_BACKOFF[0]
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    delay = LISTEN_BACKOFF[0]
                    # Whatever was announced while we were not listening: look everywhere.
                    callback(None)
                    async for notice in conn.notifies():
                        callback(notice.payload or None)
            except psycopg.Error as exc:
                log.warning("store notifications lost (%s); listening again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF[1])
