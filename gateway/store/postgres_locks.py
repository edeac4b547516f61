"""`Store.lock(name)` on PostgreSQL: held by one task of all the processes sharing the
database at a time.

A session advisory lock (`pg_advisory_lock`, key: a hash of the schema and the name) held
on a connection of its own for as long as the lock is held, so Bitrix24 token refreshes
are single-flight across every process. Waiters of one process queue on an asyncio lock
first, so one name costs at most one waiting connection per process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.aio import LocksByName
from gateway.errors import StoreError
from gateway.store.postgres_schema import advisory_key

Pool = AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]


class AdvisoryLocks:
    """The named locks of one store; `pool` gives the store's lock pool (None: closed)."""

    def __init__(self, pool: Callable[[], Pool | None], schema: Callable[[], str], what: str):
        self._pool = pool
        self._schema = schema
        self._what = what
        self._local = LocksByName()

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        async with self._local[name]:
            pool = self._pool()
            if pool is None:
                raise StoreError(f"the PostgreSQL store {self._what} is not open")
            key = advisory_key(self._schema(), name)
            try:
                conn = await pool.getconn()
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL: cannot take lock {name!r}: {exc}") from exc
            try:
                await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            except BaseException as exc:
                # Cancelled or failed while waiting: the lock may be granted already, and
                # only closing the session surely gives it back.
                await discard(pool, conn)
                if isinstance(exc, psycopg.Error):
                    raise StoreError(f"PostgreSQL: cannot take lock {name!r}: {exc}") from exc
                raise
            try:
                yield
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except BaseException:
                    await discard(pool, conn)
                    raise
                await pool.putconn(conn)


async def discard(pool: Pool, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
    """Close `conn` and give it back: the pool drops a closed connection."""
    with contextlib.suppress(Exception):
        await conn.close()
    await pool.putconn(conn)
