"""Shared state in PostgreSQL: scope versions and held (unrouted) messages.

A version is bumped in the transaction that made its change; after the commit the store
NOTIFYs `STATE_CHANGED` on its channel, so listening processes read `versions` at once
instead of at their next poll.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.store.base import NO_ROUTE, ROUTE_GONE, HeldMessage, HeldStats, IngestItem
from gateway.store.postgres_history import log_outcome
from gateway.store.postgres_queue import Conn, JobRow, insert_jobs, remove_ready

_HELD_COLUMNS = "id, instance, target, conversation, dedupe_key, event, held_at, reason, dead_at"
# What moves when a message is put ahead of others of its conversation (`hold_job`).
_MOVABLE = "target, dedupe_key, event, held_at, reason"
_MOVE = "target = %s, dedupe_key = %s, event = %s, held_at = %s, reason = %s"
_BUMP = (
    "INSERT INTO state_versions (scope, version) SELECT s, 1 FROM unnest(%s::text[]) AS s"
    " ORDER BY s ON CONFLICT (scope) DO UPDATE SET version = state_versions.version + 1"
)


async def bump(conn: Conn, scopes: Sequence[str]) -> None:
    await conn.execute(_BUMP, (sorted(set(scopes)),))


async def versions(conn: Conn) -> dict[str, int]:
    cursor = await conn.execute("SELECT scope, version FROM state_versions")
    return {str(scope): int(version) for scope, version in await cursor.fetchall()}


async def held(
    conn: Conn,
    limit: int,
    instance: str | None,
    target: str | None,
    dead: bool,
    after: int,
) -> list[HeldMessage]:
    query = f"SELECT {_HELD_COLUMNS} FROM held WHERE id > %s"  # noqa: S608 (constant columns)
    query += " AND dead_at IS NOT NULL" if dead else " AND dead_at IS NULL"
    params: list[Any] = [after]
    if instance is not None:
        query += " AND instance = %s"
        params.append(instance)
        if target is not None:
            query += " AND target = %s"
            params.append(target)
    cursor = await conn.execute(query + " ORDER BY id LIMIT %s", (*params, limit))
    return [held_from_row(row) for row in await cursor.fetchall()]


async def held_stats(conn: Conn) -> list[HeldStats]:
    cursor = await conn.execute(
        "SELECT instance, target, count(*) FILTER (WHERE dead_at IS NULL),"
        " count(*) FILTER (WHERE dead_at IS NOT NULL),"
        " min(held_at) FILTER (WHERE dead_at IS NULL)"
        " FROM held GROUP BY instance, target ORDER BY instance, target"
    )
    return [
        HeldStats(row[0], row[1], int(row[2]), int(row[3]), row[4])
        for row in await cursor.fetchall()
    ]


async def release_held(
    conn: Conn, released: Sequence[tuple[int, Sequence[JobRow]]], now: float
) -> int:
    """In the caller's transaction: lock the held rows, then enqueue the jobs of those that
    are still waiting, in the order given."""
    cursor = await conn.execute(
        "SELECT id FROM held WHERE id = ANY(%s::bigint[]) AND dead_at IS NULL"
        " ORDER BY id FOR UPDATE",
        ([held_id for held_id, _ in released],),
    )
    waiting = {row[0] for row in await cursor.fetchall()}
    jobs = [job for held_id, rows in released if held_id in waiting for job in rows]
    if waiting:
        await conn.execute("DELETE FROM held WHERE id = ANY(%s::bigint[])", (sorted(waiting),))
    await insert_jobs(conn, jobs, now)
    return len(waiting)


async def hold_job(conn: Conn, job_id: int, owner: str, message: IngestItem, now: float) -> bool:
    """In the caller's transaction: the job leaves the queue, its message is held, ahead
    of the held messages of its conversation accepted after it (held at acceptance time:
    `held_at` is when a message arrived), so it is released before them."""
    cursor = await conn.execute("SELECT created_at FROM jobs WHERE id = %s", (job_id,))
    found = await cursor.fetchone()
    await log_outcome(conn, job_id, "parked", now, ROUTE_GONE)
    if found is None or not await remove_ready(conn, job_id, owner):
        return False
    accepted = float(found[0])
    cursor = await conn.execute(
        "INSERT INTO held (instance, target, conversation, dedupe_key, event, held_at, reason)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            message.instance,
            message.target,
            message.conversation,
            message.dedupe_key,
            orjson.dumps(message.event),
            accepted,
            ROUTE_GONE,
        ),
    )
    new_id = (await cursor.fetchone() or (0,))[0]
    cursor = await conn.execute(
        f"SELECT id, {_MOVABLE} FROM held WHERE instance = %s AND conversation = %s"  # noqa: S608
        " AND dead_at IS NULL AND (held_at > %s OR id = %s) ORDER BY id FOR UPDATE",
        (message.instance, message.conversation, accepted, new_id),
    )
    rows = await cursor.fetchall()
    moved = [rows[-1], *rows[:-1]]
    await cursor.executemany(
        f"UPDATE held SET {_MOVE} WHERE id = %s",  # noqa: S608 (constant columns)
        [(*content[1:], place[0]) for place, content in zip(rows, moved, strict=True)],
    )
    await bump(conn, ["held"])
    return True


async def expire_held(conn: Conn, before: float, reason: str, now: float) -> list[HeldMessage]:
    cursor = await conn.execute(
        f"UPDATE held SET dead_at = %s, reason = %s WHERE dead_at IS NULL AND held_at < %s"  # noqa: S608
        f" RETURNING {_HELD_COLUMNS}",
        (now, reason, before),
    )
    return sorted((held_from_row(row) for row in await cursor.fetchall()), key=lambda m: m.id)


async def replay_held(conn: Conn, ids: Sequence[int], now: float) -> int:
    query = "UPDATE held SET dead_at = NULL, held_at = %s, reason = %s WHERE dead_at IS NOT NULL"
    if ids:
        cursor = await conn.execute(
            query + " AND id = ANY(%s::bigint[])", (now, NO_ROUTE, list(dict.fromkeys(ids)))
        )
    else:
        cursor = await conn.execute(query, (now, NO_ROUTE))
    count = int(cursor.rowcount)
    if count:
        await bump(conn, ["held"])
    return count


def held_from_row(row: Sequence[Any]) -> HeldMessage:
    return HeldMessage(
        id=int(row[0]),
        instance=str(row[1]),
        target=None if row[2] is None else str(row[2]),
        conversation=str(row[3]),
        dedupe_key=str(row[4]),
        event=orjson.loads(row[5]),
        held_at=float(row[6]),
        reason=str(row[7]),
        dead_at=None if row[8] is None else float(row[8]),
    )
