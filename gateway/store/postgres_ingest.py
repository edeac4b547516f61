"""Group commit of the PostgreSQL store's ingest: the webhooks of one loop turn
(`group.TickGroup`) are one transaction and one commit, and each is answered after it.

The transaction first locks every lane the group's jobs go to, in lane order, the order
of `postgres_queue.lock_lanes` (`lock_lanes` here; a lane without a row gets a
placeholder), then runs one INGEST statement for the whole group (each caller keeps its
own time) and places late messages. The first grouped version ran one statement per
caller's time in one transaction, so a group took its lanes' locks in arrival order; it
deadlocked against `lock_lanes` (finish, `place_late`) and other processes' groups, each
deadlock costing PostgreSQL's `deadlock_timeout` (1 s). Now every transaction that locks
lanes takes them in one order, and an ingest takes events, the only other rows two groups
may both want, after its lanes and in key order.

The statement keeps the first of several rows with one dedupe key and holds items behind
earlier held ones of their conversation, so callers of a group dedupe and keep their order
as they would one after the other. If it fails on a caller's rows (a data or constraint
error), the group is tried again in a new transaction, each caller in a savepoint of its
own, so that caller alone fails. Any other failure (the connection, the commit) fails
every caller of the group: nothing of theirs is stored, and each webhook is answered 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias

import psycopg

from gateway.errors import StoreError
from gateway.store import postgres_queue as q
from gateway.store.group import TickGroup

_IngestRow: TypeAlias = tuple[str, str, bytes, list[q.JobRow], bool, str | None, str | None]
_IngestRequest: TypeAlias = tuple[list[_IngestRow], float]
_IngestOutcome: TypeAlias = list[int | None] | BaseException
_Found: TypeAlias = tuple[list[_IngestOutcome], bool, list[int]]
Run: TypeAlias = Callable[..., Awaitable[Any]]
# What a caller's own rows can cause; anything else is the database's or the connection's.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)

# Every lane a group's jobs go to, locked before anything is inserted and in the order of
# `postgres_queue.lock_lanes`: an existing row is locked (DO UPDATE ... WHERE false locks
# the rows it does not update), a missing one is made as a placeholder (head 'Infinity')
# that INGEST fills or deletes. No one else sees a placeholder: it is never committed.
_LOCK_LANES = (
    "INSERT INTO lanes (lane, destination, head, available_at)"
    " SELECT lane, destination, 'Infinity', 'Infinity'"
    " FROM unnest(%s::text[], %s::text[]) AS l(lane, destination)"
    ' ORDER BY lane COLLATE "C" ON CONFLICT (lane) DO UPDATE SET head = lanes.head WHERE false'
)


class _RowsRefused(Exception):
    """One caller's rows failed the group's statement: try each caller alone."""


class GroupedIngest:
    """`await submit((rows, now))`: the new event ids of `rows` (None: duplicate)."""

    def __init__(
        self,
        run: Run,
        announce: Callable[[Iterable[str]], None],
        announce_state: Callable[[], None],
    ) -> None:
        self._store_run = run
        self._announce = announce
        self._announce_state = announce_state
        self._group: TickGroup[_IngestRequest, list[int | None]] = TickGroup(
            lambda requests: asyncio.ensure_future(self._batch(requests))
        )

    async def submit(self, request: _IngestRequest) -> list[int | None]:
        return await self._group.submit(request)

    async def drain(self) -> None:
        await self._group.drain()

    @property
    def batches(self) -> int:
        return self._group.batches

    async def _batch(self, requests: Sequence[_IngestRequest]) -> list[_IngestOutcome]:
        try:
            found: _Found = await self._store_run(
                lambda c: _together(c, requests), transaction=True
            )
        except _RowsRefused:
            found = await self._store_run(lambda c: _alone(c, requests), transaction=True)
        outcomes, held, _ = found
        self._announce(
            job[3]
            for (rows, _), ids in zip(requests, outcomes, strict=True)
            if not isinstance(ids, BaseException)
            for row, n in zip(rows, ids, strict=True)
            if n
            for job in row[3]
        )
        if held:
            self._announce_state()
        return outcomes


def _jobs(requests: Sequence[_IngestRequest]) -> list[q.JobRow]:
    return [job for rows, _ in requests for row in rows for job in row[3]]


async def _together(conn: q.Conn, requests: Sequence[_IngestRequest]) -> _Found:
    """The whole group in one INGEST statement."""
    await lock_lanes(conn, _jobs(requests))
    rows = [row for rows, _ in requests for row in rows]
    at = [now for rows, now in requests for _ in rows]
    try:
        ids, held, late = await q.ingest(conn, rows, at)
    except _ROW_ERRORS as exc:
        if len(requests) == 1:
            raise
        raise _RowsRefused from exc
    if late:
        await q.place_late(conn, late)
    found = iter(ids)
    return [[next(found) for _ in rows] for rows, _ in requests], held, late


async def _alone(conn: q.Conn, requests: Sequence[_IngestRequest]) -> _Found:
    """Each caller in a savepoint of its own, in order: a caller whose rows fail is rolled
    back and fails alone; the others are stored as they would be one after the other."""
    jobs = _jobs(requests)
    await lock_lanes(conn, jobs)
    outcomes: list[_IngestOutcome] = []
    held, late = False, []
    for rows, now in requests:
        try:
            async with conn.transaction():
                ids, was_held, new_late = await q.ingest(conn, rows, [now] * len(rows))
        except _ROW_ERRORS as exc:
            failure = StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            outcomes.append(failure)
            continue
        outcomes.append(ids)
        held = held or was_held
        late.extend(new_late)
    await _drop_placeholders(conn, jobs)
    if late:
        await q.place_late(conn, sorted(late))
    return outcomes, held, late


async def lock_lanes(conn: q.Conn, jobs: Sequence[q.JobRow]) -> None:
    """In the caller's transaction, before `postgres_queue.ingest`: the lanes of `jobs`."""
    destinations = {job[4]: job[3] for job in jobs}
    if destinations:
        lanes = sorted(destinations)
        await conn.execute(_LOCK_LANES, (lanes, [destinations[lane] for lane in lanes]))


async def _drop_placeholders(conn: q.Conn, jobs: Sequence[q.JobRow]) -> None:
    """The lanes `lock_lanes` made that no ingest filled (its caller's rows failed)."""
    await conn.execute(
        "DELETE FROM lanes WHERE lane = ANY(%s::text[]) AND head = 'Infinity'",
        (sorted({job[4] for job in jobs}),),
    )
