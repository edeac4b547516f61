"""The shared store: PostgreSQL, for several gateway processes on one database.

One connection pool per process (psycopg 3, async); statements run in autocommit unless
they must be one transaction. Claim is a single statement; the webhooks of one loop turn
share one ingest transaction and commit (`postgres_ingest`). `postgres_queue` holds the
queue SQL and explains how the lanes stay consistent with several processes;
`postgres_schema` the migrations.

Cross-process parts:
* `lock(name)` is a session advisory lock held on a connection of its own, so Bitrix24
  token refreshes are single-flight across every process (`postgres_locks`).
* `subscribe(callback)` LISTENs on the schema's channel; every write that gives a
  destination work (new jobs, freed leases, replays) NOTIFYs it after commit, and every
  process wakes its delivery slots for it (`postgres_notify`). The workers'
  `poll_interval` remains only as a fallback.

The URL is handed to libpq as it is: `postgresql://user:password@host:5432/db`, with
`?options=-csearch_path%3Dmyschema` to use a schema other than `public`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from gateway.errors import StoreError
from gateway.models import JSON
from gateway.store import postgres_history as history
from gateway.store import postgres_queue as q
from gateway.store import postgres_shared as shared
from gateway.store.base import (
    STATE_CHANGED,
    Activity,
    DestinationStats,
    Finished,
    HeldMessage,
    HeldStats,
    IdMapping,
    IngestItem,
    Job,
    JobStep,
    NewJob,
    Store,
    StoredEvent,
    StoredRoute,
)
from gateway.store.postgres_ingest import GroupedIngest
from gateway.store.postgres_locks import AdvisoryLocks
from gateway.store.postgres_notify import Notifier
from gateway.store.postgres_schema import channel, current_version, migrate
from gateway.store.rows import sort_time

T = TypeVar("T")
log = logging.getLogger("gateway.store")

POOL_MIN, POOL_MAX = 1, 10
# Locks are held across provider calls; each holder keeps a connection of this pool.
LOCK_POOL_MAX = 50
CONNECT_TIMEOUT = 10.0
# Deadlocks between writers are rare (see postgres_queue) and resolved by trying again.
TRIES = 5
_MAPPING_COLUMNS = "route, source, source_id, destination, destination_id, conversation_id, extra"


class PostgresStore(Store):
    """`Store` on a PostgreSQL database (one schema of it), shared by many processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = ""
        self.channel = ""
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None
        self._lock_pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None
        self._notifier: Notifier | None = None
        self._advisory = AdvisoryLocks(lambda: self._lock_pool, lambda: self.schema, redacted(url))
        self._ingests = GroupedIngest(self._run, self._announce, self._announce_state)

    def __repr__(self) -> str:
        return f"PostgresStore({redacted(self.url)!r})"

    # plumbing --------------------------------------------------------------------------
    def _new_pool(
        self, min_size: int, max_size: int, name: str
    ) -> AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        return AsyncConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name=name,
            timeout=CONNECT_TIMEOUT,
        )

    async def _run(
        self, operation: Callable[[q.Conn], Awaitable[T]], *, transaction: bool = False
    ) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the PostgreSQL store {redacted(self.url)} is not open")
        for attempt in range(1, TRIES + 1):
            try:
                async with pool.connection() as conn:
                    if not transaction:
                        return await operation(conn)
                    async with conn.transaction():
                        return await operation(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == TRIES:
                    raise StoreError("PostgreSQL: gave up after repeated deadlocks") from None
                log.info("store transaction deadlocked; trying again (%d)", attempt)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        # One plain connection first: a wrong URL or a server that is down fails at once,
        # with libpq's reason, instead of after the pool's retries.
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            ) as conn:
                cursor = await conn.execute("SELECT current_schema()")
                row = await cursor.fetchone()
                if row is None or row[0] is None:
                    raise StoreError(
                        f"{redacted(self.url)}: no schema to use: the search_path names no "
                        "schema that exists (create it, or fix options=-csearch_path=...)"
                    )
                self.schema = str(row[0])
                await migrate(conn, self.schema)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the PostgreSQL store {redacted(self.url)}: {exc}"
            ) from exc
        self.channel = channel(self.schema)
        pool = self._new_pool(POOL_MIN, POOL_MAX, "gateway")
        lock_pool = self._new_pool(0, LOCK_POOL_MAX, "gateway-locks")
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            await lock_pool.open()
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(
                f"cannot open the PostgreSQL store {redacted(self.url)}: {exc}"
            ) from exc
        self._pool, self._lock_pool = pool, lock_pool
        self._notifier = Notifier(self.url, self.channel, pool)

    async def close(self) -> None:
        await self._ingests.drain()
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.close()
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                await pool.close()
        self._pool = self._lock_pool = None

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1"))

    async def schema_version(self) -> int:
        return await self._run(current_version)

    # inbound ---------------------------------------------------------------------------
    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[int | None]:
        if not items:
            return []
        rows = [
            (
                i.instance,
                i.dedupe_key,
                orjson.dumps(i.event),
                [_job_row(j) for j in i.jobs],
                i.hold,
                i.conversation,
                i.target,
            )
            for i in items
        ]
        # Webhooks of one loop turn share one statement and one commit.
        return await self._ingests.submit((rows, now))

    async def prune_events(self, before: float) -> int:
        async def run(conn: Any) -> int:
            await conn.execute("DELETE FROM job_log WHERE at < %s", (before,))
            cursor = await conn.execute("DELETE FROM events WHERE received_at < %s", (before,))
            return int(cursor.rowcount)

        return await self._run(run)

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        rows = [_job_row(job) for job in jobs]
        ids = await self._run(lambda c: q.insert_jobs(c, rows, now), transaction=True)
        self._announce(job.destination for job in jobs)
        return ids

    # delivery --------------------------------------------------------------------------
    async def claim(
        self, destination: str, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Job]:
        return await self._run(lambda c: q.claim(c, destination, owner, limit, lease_seconds, now))

    async def finish(self, finished: Sequence[Finished], owner: str, now: float) -> bool:
        rows = [
            (f.job_id, [_mapping_row(m) for m in f.mappings], [_job_row(j) for j in f.followups])
            for f in finished
        ]
        if not rows:
            return False
        followed_up, freed_work = await self._run(
            lambda c: q.finish(c, rows, owner, now), transaction=True
        )
        self._announce(followed_up)
        return freed_work

    async def retry(
        self,
        job_id: int,
        owner: str,
        available_at: float,
        error: str,
        now: float,
        *,
        possibly_sent_since: float | None = None,
    ) -> None:
        since = possibly_sent_since

        async def run(c: q.Conn) -> None:
            await history.log_outcome(c, job_id, "retried", now, error)
            await q.retry(c, job_id, owner, available_at, error, since)

        await self._run(run, transaction=True)

    async def dead_letter(self, job_id: int, owner: str, reason: str, now: float) -> None:
        async def run(c: q.Conn) -> None:
            await history.log_outcome(c, job_id, "parked", now, reason)
            await q.dead_letter(c, job_id, owner, reason, now)

        await self._run(run, transaction=True)

    async def renew(self, owner: str, lanes: Sequence[str], until: float) -> None:
        names = list(lanes)
        if names:
            await self._run(lambda c: q.renew(c, owner, names, until))

    async def release(
        self, owner: str, lanes: Sequence[str], now: float, unsent: Sequence[int] = ()
    ) -> None:
        names, ids = list(lanes), list(unsent)
        if names or ids:
            self._announce(
                await self._run(lambda c: q.release(c, owner, names, ids), transaction=bool(ids))
            )

    async def next_due(self, destination: str, now: float) -> float | None:
        return await self._run(lambda c: q.next_due(c, destination))

    async def destinations_with_work(self, now: float) -> list[str]:
        return await self._run(q.destinations_with_work)

    async def sending(self, destination: str, since: float) -> int:
        return await self._run(lambda c: q.sending(c, destination, since))

    # id map and statuses ---------------------------------------------------------------
    async def lookup_by_source(self, route: str, source: str, source_id: str) -> IdMapping | None:
        row = await self._fetchone(
            f"SELECT {_MAPPING_COLUMNS} FROM id_map"  # noqa: S608 (constant columns)
            " WHERE route = %s AND source = %s AND source_id = %s",
            (route, source, source_id),
        )
        return None if row is None else _mapping(row)

    async def lookup_by_destination(
        self, destination: str, destination_id: str
    ) -> IdMapping | None:
        # One destination message may answer several routes; the latest mapping wins.
        row = await self._fetchone(
            f"SELECT {_MAPPING_COLUMNS} FROM id_map"  # noqa: S608 (constant columns)
            " WHERE destination = %s AND destination_id = %s ORDER BY id DESC LIMIT 1",
            (destination, destination_id),
        )
        return None if row is None else _mapping(row)

    async def merge_status(self, instance: str, native_id: str, status: int, now: float) -> bool:
        changed = await self._execute(
            "INSERT INTO statuses (instance, native_id, status, updated_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (instance, native_id) DO UPDATE"
            " SET status = excluded.status, updated_at = excluded.updated_at"
            " WHERE excluded.status > statuses.status",
            (instance, native_id, int(status), now),
        )
        return changed > 0

    # dead letters and admin ------------------------------------------------------------
    async def dead_letters(
        self, *, limit: int = 100, destination: str | None = None, lane: str | None = None
    ) -> list[Job]:
        return await self._run(lambda c: q.dead_letters(c, limit, destination, lane))

    async def replay_jobs(
        self,
        *,
        job_ids: Sequence[int] = (),
        lane: str | None = None,
        since: float | None = None,
        until: float | None = None,
        now: float,
    ) -> list[tuple[int, int]]:
        ids = list(job_ids)
        pairs, destinations = await self._run(
            lambda c: q.replay(c, ids, lane, since, until, now), transaction=True
        )
        self._announce(destinations)
        return pairs

    async def job_history(
        self,
        *,
        job_ids: Sequence[int] = (),
        message: str | None = None,
        lane_part: str | None = None,
        limit: int = 500,
    ) -> list[JobStep]:
        ids = list(job_ids)
        return await self._run(lambda c: history.job_history(c, ids, message, lane_part, limit))

    async def find_jobs(self, text: str, limit: int = 100) -> list[Job]:
        return await self._run(lambda c: history.find_jobs(c, text, limit))

    async def find_events(self, text: str, since: float, limit: int = 50) -> list[StoredEvent]:
        return await self._run(lambda c: history.find_events(c, text, since, limit))

    async def activity(self, since: float, width: float, count: int) -> list[Activity]:
        return await self._run(lambda c: history.activity(c, since, width, count))

    async def stats(self, now: float) -> list[DestinationStats]:
        return await self._run(q.stats)

    async def get_job(self, job_id: int) -> Job | None:
        return await self._run(lambda c: q.get_job(c, job_id))

    # provider state --------------------------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        row = await self._fetchone(
            "SELECT value FROM kv WHERE namespace = %s AND key = %s", (namespace, key)
        )
        return None if row is None else orjson.loads(row[0])

    async def kv_put(self, namespace: str, key: str, value: JSON) -> None:
        await self._execute(
            "INSERT INTO kv (namespace, key, value) VALUES (%s, %s, %s)"
            " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, orjson.dumps(value)),
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._execute("DELETE FROM kv WHERE namespace = %s AND key = %s", (namespace, key))

    async def kv_items(self, namespace: str, prefix: str = "") -> list[tuple[str, JSON]]:
        # Keys are COLLATE "C" (code point order): those with the prefix form one range.
        query = "SELECT key, value FROM kv WHERE namespace = %s AND key >= %s"
        params: list[Any] = [namespace, prefix]
        end = _successor(prefix)
        if end is not None:
            query += " AND key < %s"
            params.append(end)

        async def read(conn: q.Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query + " ORDER BY key", params)
            return await cursor.fetchall()

        return [(str(key), orjson.loads(value)) for key, value in await self._run(read)]

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held by one task of all processes sharing the database at a time (see module)."""
        return self._advisory.hold(name)

    # wake-ups across processes ---------------------------------------------------------
    async def subscribe(self, callback: Callable[[str | None], None]) -> None:
        self._notifier_or_fail().listen(callback)

    def _notifier_or_fail(self) -> Notifier:
        if self._notifier is None:
            raise StoreError(f"the PostgreSQL store {redacted(self.url)} is not open")
        return self._notifier

    def _announce(self, destinations: Iterable[str]) -> None:
        if self._notifier is not None:
            self._notifier.announce(destinations)

    # routes ----------------------------------------------------------------------------
    async def save_route(self, route: StoredRoute) -> None:
        async def save(conn: q.Conn) -> None:
            await conn.execute(
                "INSERT INTO routes (name, channel, crm, target, direction)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " channel = excluded.channel, crm = excluded.crm, target = excluded.target,"
                " direction = excluded.direction",
                (route.name, route.channel, route.crm, route.target, route.direction),
            )
            await shared.bump(conn, ["routes"])

        await self._run(save, transaction=True)
        self._announce_state()

    async def delete_route(self, name: str) -> None:
        async def delete(conn: q.Conn) -> None:
            await conn.execute("DELETE FROM routes WHERE name = %s", (name,))
            await shared.bump(conn, ["routes"])

        await self._run(delete, transaction=True)
        self._announce_state()

    async def load_routes(self) -> list[StoredRoute]:
        async def read(conn: q.Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(
                "SELECT name, channel, crm, target, direction FROM routes ORDER BY name"
            )
            return await cursor.fetchall()

        return [StoredRoute(*row) for row in await self._run(read)]

    # shared state ----------------------------------------------------------------------
    def _announce_state(self) -> None:
        self._announce([STATE_CHANGED])

    async def versions(self) -> dict[str, int]:
        return await self._run(shared.versions)

    async def bump(self, scopes: Sequence[str]) -> None:
        names = list(scopes)
        if names:
            await self._run(lambda c: shared.bump(c, names))
            self._announce_state()

    async def held(
        self,
        *,
        limit: int = 100,
        instance: str | None = None,
        target: str | None = None,
        dead: bool = False,
        after: int = 0,
    ) -> list[HeldMessage]:
        return await self._run(lambda c: shared.held(c, limit, instance, target, dead, after))

    async def held_stats(self) -> list[HeldStats]:
        return await self._run(shared.held_stats)

    async def release_held(
        self, released: Sequence[tuple[int, Sequence[NewJob]]], now: float
    ) -> int:
        rows = [(held_id, [_job_row(job) for job in jobs]) for held_id, jobs in released]
        if not rows:
            return 0
        count = await self._run(lambda c: shared.release_held(c, rows, now), transaction=True)
        self._announce(job.destination for _, jobs in released for job in jobs)
        return count

    async def hold_job(self, job_id: int, owner: str, message: IngestItem, now: float) -> bool:
        hold = functools.partial(shared.hold_job, job_id=job_id, owner=owner, message=message)
        held = await self._run(lambda c: hold(c, now=now), transaction=True)
        if held:
            self._announce_state()
        return held

    async def expire_held(self, before: float, reason: str, now: float) -> list[HeldMessage]:
        return await self._run(lambda c: shared.expire_held(c, before, reason, now))

    async def replay_held(self, *, ids: Sequence[int] = (), now: float) -> int:
        wanted = list(ids)
        count = await self._run(lambda c: shared.replay_held(c, wanted, now), transaction=True)
        if count:
            self._announce_state()
        return count

    # helpers ---------------------------------------------------------------------------
    async def _execute(self, query: str, params: Sequence[Any]) -> int:
        async def run(conn: q.Conn) -> int:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

        return await self._run(run)

    async def _fetchone(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async def run(conn: q.Conn) -> tuple[Any, ...] | None:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

        return await self._run(run)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username}:***@{host}{port}" if parts.username else f"***@{host}{port}"
    return parts._replace(netloc=netloc).geturl()


def _successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates cannot be stored as UTF-8
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _job_row(job: NewJob) -> q.JobRow:
    payload = orjson.dumps(job.payload)
    return (job.kind, job.route, job.source, job.destination, job.lane, payload, sort_time(job))


def _mapping_row(m: IdMapping) -> q.MappingRow:
    return (
        m.route,
        m.source,
        m.source_id,
        m.destination,
        m.destination_id,
        m.conversation_id,
        orjson.dumps(m.extra),
    )


def _mapping(row: Sequence[Any]) -> IdMapping:
    route, source, source_id, destination, destination_id, conversation_id, extra = row
    return IdMapping(
        route=str(route),
        source=str(source),
        source_id=str(source_id),
        destination=str(destination),
        destination_id=str(destination_id),
        conversation_id=None if conversation_id is None else str(conversation_id),
        extra=orjson.loads(extra),
    )
