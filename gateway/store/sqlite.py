"""The embedded store: one SQLite file, for single-process deployments.

Every call, reads included, runs on one dedicated thread that owns the connection (see
`sqlite_thread`), so the event loop never blocks on SQLite and writes queued together share
one transaction and one fsync. Reads go through the same queue: they are microseconds, and
a second connection would only add a second view of the data to reason about.

Durability (see `sqlite_thread`): WAL, each commit's frames fdatasynced before any of its
callers hears back; an awaited write has been committed and synced, so a webhook may be
answered as soon as `ingest` returns.

Scope: one gateway per database file: one process, or (`shared=True`) the HTTP process and
the delivery process of one `gateway run` (see `gateway.supervisor`), which take turns on
`<db>.writer` for every transaction and on `<db>.names` for `lock()` (see `sqlite_locks`).
Unshared, `lock()` is an asyncio lock held in this store object. The store uses asyncio
(`asyncio.wrap_future`, `asyncio.Lock`) and may be used from any event loop, one store per
loop being the norm.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import IO, Any, TypeAlias, TypeVar

import orjson

from gateway.errors import StoreError
from gateway.models import JSON
from gateway.store import sqlite_history as history
from gateway.store import sqlite_queue as q
from gateway.store import sqlite_shared as shared
from gateway.store.base import (
    ROUTE_GONE,
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
from gateway.store.group import TickGroup
from gateway.store.rows import sort_time
from gateway.store.sqlite_locks import NamedLocks, WriterLock, exclusive_lock
from gateway.store.sqlite_schema import MEMORY, connect, current_version
from gateway.store.sqlite_thread import Writer, as_store_error

T = TypeVar("T")

_IngestRow: TypeAlias = tuple[str, str, bytes, list[q.JobRow], bool, str | None, str | None]
_IngestRequest: TypeAlias = tuple[list[_IngestRow], float]
_IngestOutcome: TypeAlias = list[int | None] | BaseException

_MAPPING_COLUMNS = "route, source, source_id, destination, destination_id, conversation_id, extra"
#: Rows of each table a prune deletes per transaction. The first prune of a store that kept
#: months of events would otherwise hold the write lock for seconds, with webhooks waiting,
#: and its savepoint (when it shares a commit) would copy every page it touches into memory.
PRUNE_CHUNK = 5000


class SQLiteStore(Store):
    """`Store` on a SQLite file (or `:memory:`, which lives as long as the open store)."""

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        exclusive: bool = True,
        shared: bool = False,
        free_leases: bool | None = None,
    ) -> None:
        """`exclusive`: take `<db>.lock` (a second gateway is refused) and free every lease
        at open. `shared`: one of the processes of a supervised gateway, whose supervisor
        holds `<db>.lock`; `free_leases` says whether this one holds all the leases (the
        delivery process does)."""
        self.path = path
        self.shared = shared and path != MEMORY
        self.exclusive = exclusive and path != MEMORY and not self.shared
        self.free_leases = self.exclusive if free_leases is None else free_leases
        self._named: NamedLocks | None = None
        self.url = url or ("sqlite://:memory:" if path == MEMORY else f"sqlite:///{path}")
        self._writer: Writer | None = None
        self._lock_file: IO[bytes] | None = None
        # Weak: a lock nobody holds or waits for can go; the next caller gets a fresh one.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Told when this store object changed shared state (other processes sharing the
        # file find out by reading `versions`).
        self._listeners: list[Callable[[str | None], None]] = []
        self._ingests: TickGroup[_IngestRequest, list[int | None]] = TickGroup(self._start_ingests)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return await self._writer.submit_async(operation)

    # lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        if self.exclusive:
            self._lock_file = exclusive_lock(self.path)
        try:
            lock = None if self.path == MEMORY else WriterLock(self.path)
            writer = Writer(
                functools.partial(connect, self.path),
                f"sqlite {self.path}",
                lock,
                wal=None if self.path == MEMORY else f"{self.path}-wal",
            )
            await asyncio.wrap_future(writer.start())
        except BaseException:
            self._unlock()
            raise
        self._writer = writer
        if self.shared:
            self._named = NamedLocks(self.path)
        if self.free_leases:
            # No other process that delivers can be using this file (we hold its lock, or
            # are the one delivery process of its supervisor), so every lease in it belongs
            # to a process that died (SIGKILL, power loss): free them so delivery resumes.
            await self._run(q.free_all_leases)

    async def close(self) -> None:
        await self._ingests.drain()
        self._listeners.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.wrap_future(writer.stop())
        self._unlock()

    def _unlock(self) -> None:
        named, self._named = self._named, None
        if named is not None:
            named.close()
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()

    async def ping(self) -> None:
        await self._run(_fetchone("SELECT 1", ()))

    async def schema_version(self) -> int:
        return await self._run(current_version)

    # inbound ---------------------------------------------------------------------------
    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[int | None]:
        # Encoded here, so a payload that is not JSON fails in the caller, before any SQL.
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
        # Webhooks of one loop turn share one writer operation, hand-off and commit.
        return await self._ingests.submit((rows, now))

    def _start_ingests(
        self, requests: Sequence[_IngestRequest]
    ) -> asyncio.Future[Sequence[_IngestOutcome]]:
        if self._writer is None:
            raise StoreError(f"the SQLite store {self.path} is not open")
        held: list[str] = []
        running = self._writer.submit_async(lambda c: _ingest_group(c, requests, held))

        def announce(_: object) -> None:
            if held:
                self._announce_state()

        running.add_done_callback(announce)
        return running  # type: ignore[return-value]

    async def prune_events(self, before: float) -> int:
        pruned = 0
        while True:
            events, more = await self._run(lambda c: _prune(c, before, PRUNE_CHUNK))
            pruned += events
            if not more:
                return pruned

    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        rows = [_job_row(job) for job in jobs]
        return await self._run(lambda c: q.insert_jobs(c, rows, now))

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
        return await self._run(lambda c: q.finish(c, rows, owner, now))

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

        def run(c: sqlite3.Connection) -> None:
            history.log_outcome(c, job_id, "retried", now, error)
            q.retry(c, job_id, owner, available_at, error, since)

        await self._run(run)

    async def dead_letter(self, job_id: int, owner: str, reason: str, now: float) -> None:
        def run(c: sqlite3.Connection) -> None:
            history.log_outcome(c, job_id, "parked", now, reason)
            q.dead_letter(c, job_id, owner, reason, now)

        await self._run(run)

    async def renew(self, owner: str, lanes: Sequence[str], until: float) -> None:
        names = list(lanes)
        await self._run(lambda c: q.renew(c, owner, names, until))

    async def release(
        self, owner: str, lanes: Sequence[str], now: float, unsent: Sequence[int] = ()
    ) -> None:
        names, ids = list(lanes), list(unsent)
        await self._run(lambda c: q.release(c, owner, names, ids))

    async def next_due(self, destination: str, now: float) -> float | None:
        return await self._run(lambda c: q.next_due(c, destination))

    async def destinations_with_work(self, now: float) -> list[str]:
        return await self._run(q.destinations_with_work)

    async def sending(self, destination: str, since: float) -> int:
        return await self._run(lambda c: q.sending(c, destination, since))

    # id map and statuses ---------------------------------------------------------------
    async def lookup_by_source(self, route: str, source: str, source_id: str) -> IdMapping | None:
        row = await self._run(
            _fetchone(
                f"SELECT {_MAPPING_COLUMNS} FROM id_map"  # noqa: S608 (constant columns)
                " WHERE route = ? AND source = ? AND source_id = ?",
                (route, source, source_id),
            )
        )
        return None if row is None else _mapping(row)

    async def lookup_by_destination(
        self, destination: str, destination_id: str
    ) -> IdMapping | None:
        # One destination message may answer several routes; the latest mapping wins.
        row = await self._run(
            _fetchone(
                f"SELECT {_MAPPING_COLUMNS} FROM id_map"  # noqa: S608 (constant columns)
                " WHERE destination = ? AND destination_id = ? ORDER BY id DESC LIMIT 1",
                (destination, destination_id),
            )
        )
        return None if row is None else _mapping(row)

    async def merge_status(self, instance: str, native_id: str, status: int, now: float) -> bool:
        changed = await self._run(
            _execute(
                "INSERT INTO statuses (instance, native_id, status, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (instance, native_id) DO UPDATE"
                " SET status = excluded.status, updated_at = excluded.updated_at"
                " WHERE excluded.status > statuses.status",
                (instance, native_id, int(status), now),
            )
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
        return await self._run(lambda c: q.replay(c, ids, lane, since, until, now))

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
        row = await self._run(
            _fetchone("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        )
        return None if row is None else orjson.loads(row[0])

    async def kv_put(self, namespace: str, key: str, value: JSON) -> None:
        await self._run(
            _execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, orjson.dumps(value)),
            )
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._run(
            _execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        )

    async def kv_items(self, namespace: str, prefix: str = "") -> list[tuple[str, JSON]]:
        def read(connection: sqlite3.Connection) -> list[tuple[str, bytes]]:
            # Keys compare as UTF-8 bytes, i.e. code points, so those with the prefix form
            # one index range starting at the prefix itself.
            found: list[tuple[str, bytes]] = []
            for key, value in connection.execute(
                "SELECT key, value FROM kv WHERE namespace = ? AND key >= ? ORDER BY key",
                (namespace, prefix),
            ):
                if not key.startswith(prefix):
                    break
                found.append((key, value))
            return found

        return [(key, orjson.loads(value)) for key, value in await self._run(read)]

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Per name: across the processes of a shared store, else per store object."""
        if self._named is not None:
            return self._named.hold(name)
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # routes ----------------------------------------------------------------------------
    async def save_route(self, route: StoredRoute) -> None:
        def save(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO routes (name, channel, crm, target, direction)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " channel = excluded.channel, crm = excluded.crm, target = excluded.target,"
                " direction = excluded.direction",
                (route.name, route.channel, route.crm, route.target, route.direction),
            )
            shared.bump(connection, ["routes"])

        await self._run(save)
        self._announce_state()

    async def delete_route(self, name: str) -> None:
        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM routes WHERE name = ?", (name,))
            shared.bump(connection, ["routes"])

        await self._run(delete)
        self._announce_state()

    async def load_routes(self) -> list[StoredRoute]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT name, channel, crm, target, direction FROM routes ORDER BY name"
            ).fetchall()
        )
        return [StoredRoute(*row) for row in rows]

    # shared state ----------------------------------------------------------------------
    async def subscribe(self, callback: Callable[[str | None], None]) -> None:
        """Local only: this store object's own changes of shared state (`STATE_CHANGED`)."""
        self._listeners.append(callback)

    def _announce_state(self) -> None:
        for callback in list(self._listeners):
            callback(STATE_CHANGED)

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
        return await self._run(lambda c: shared.release_held(c, rows, now, q.insert_jobs))

    async def hold_job(self, job_id: int, owner: str, message: IngestItem, now: float) -> bool:
        row = _hold_row(message)

        def run(c: sqlite3.Connection) -> bool:
            found = c.execute("SELECT created_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            history.log_outcome(c, job_id, "parked", now, ROUTE_GONE)
            if found is None or not q.remove_ready(c, job_id, owner):
                return False
            shared.hold_in_order(c, row, float(found[0]), ROUTE_GONE)
            return True

        held = await self._run(run)
        if held:
            self._announce_state()
        return held

    async def expire_held(self, before: float, reason: str, now: float) -> list[HeldMessage]:
        return await self._run(lambda c: shared.expire_held(c, before, reason, now))

    async def replay_held(self, *, ids: Sequence[int] = (), now: float) -> int:
        wanted = list(ids)
        count = await self._run(lambda c: shared.replay_held(c, wanted, now))
        if count:
            self._announce_state()
        return count


def _prune(connection: sqlite3.Connection, before: float, limit: int) -> tuple[int, bool]:
    """Up to `limit` history rows and events older than `before`: the events deleted, and
    whether either table may have more."""
    logged = connection.execute(
        "DELETE FROM job_log WHERE id IN (SELECT id FROM job_log WHERE at < ? LIMIT ?)",
        (before, limit),
    ).rowcount
    events = connection.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ? LIMIT ?)",
        (before, limit),
    ).rowcount
    return events, limit in (logged, events)


def _execute(sql: str, params: Sequence[Any]) -> Callable[[sqlite3.Connection], int]:
    return lambda c: c.execute(sql, params).rowcount


def _fetchone(sql: str, params: Sequence[Any]) -> Callable[[sqlite3.Connection], Any]:
    return lambda c: c.execute(sql, params).fetchone()


def _hold_row(m: IngestItem) -> shared.HoldRow:
    return (m.instance, m.dedupe_key, orjson.dumps(m.event), True, m.conversation, m.target)


def _job_row(job: NewJob) -> q.JobRow:
    payload = orjson.dumps(job.payload)
    return (job.kind, job.route, job.source, job.destination, job.lane, payload, sort_time(job))


def _mapping_row(m: IdMapping) -> q.MappingRow:
    extra = orjson.dumps(m.extra)
    return (
        m.route,
        m.source,
        m.source_id,
        m.destination,
        m.destination_id,
        m.conversation_id,
        extra,
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


def _ingest_group(
    connection: sqlite3.Connection, requests: Sequence[_IngestRequest], held: list[str]
) -> list[_IngestOutcome]:
    """Every caller's ingest in this transaction. Tried all at once first; if one fails,
    all are rolled back and each runs in a savepoint of its own, so only the failing
    caller hears of its failure (its rows are not stored) and the others commit."""
    connection.execute("SAVEPOINT ingest_group")
    try:
        outcomes: list[_IngestOutcome] = [q.ingest(connection, r, t, held) for r, t in requests]
    except Exception:
        connection.execute("ROLLBACK TO ingest_group")
        held.clear()
    else:
        connection.execute("RELEASE ingest_group")
        return outcomes
    outcomes = []
    for rows, now in requests:
        connection.execute("SAVEPOINT ingest_one")
        mark = len(held)
        try:
            outcomes.append(q.ingest(connection, rows, now, held))
        except Exception as exc:
            connection.execute("ROLLBACK TO ingest_one")
            del held[mark:]
            outcomes.append(as_store_error(exc))
        connection.execute("RELEASE ingest_one")
    connection.execute("RELEASE ingest_group")
    return outcomes
