"""Shared state in SQLite: scope versions and held (unrouted) messages, on the writer thread.

Versions are rows of `state_versions`, bumped in the transaction that made the change, so a
process reading them (several processes may share one file in WAL mode) never sees a
change without its version or the other way round.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeAlias

import orjson

from gateway.store.base import BEHIND_HELD, NO_ROUTE, HeldMessage, HeldStats

# (instance, dedupe_key, event as JSON bytes, hold, conversation, target)
HoldRow: TypeAlias = tuple[str, str, bytes, bool, str | None, str | None]

_HELD_COLUMNS = "id, instance, target, conversation, dedupe_key, event, held_at, reason, dead_at"
# What moves when a message is put ahead of others of its conversation (`hold_in_order`).
_MOVABLE = "target, dedupe_key, event, held_at, reason"
_MOVE = "target = ?, dedupe_key = ?, event = ?, held_at = ?, reason = ?"


def bump(connection: sqlite3.Connection, scopes: Sequence[str]) -> None:
    connection.executemany(
        "INSERT INTO state_versions (scope, version) VALUES (?, 1)"
        " ON CONFLICT (scope) DO UPDATE SET version = version + 1",
        [(scope,) for scope in dict.fromkeys(scopes)],
    )


def versions(connection: sqlite3.Connection) -> dict[str, int]:
    return {
        str(scope): int(version)
        for scope, version in connection.execute("SELECT scope, version FROM state_versions")
    }


def hold_if_needed(
    connection: sqlite3.Connection, row: HoldRow, has_jobs: bool, now: float
) -> bool:
    """Keep the message in `held` when it must be; True if it was (its jobs then wait)."""
    instance, _, _, hold, conversation, _ = row
    if conversation is None:
        return False
    if hold:
        reason = NO_ROUTE
    elif has_jobs and _has_held(connection, instance, conversation):
        reason = BEHIND_HELD
    else:
        return False
    insert_held(connection, row, now, reason)
    return True


def insert_held(connection: sqlite3.Connection, row: HoldRow, now: float, reason: str) -> int:
    instance, dedupe_key, event, _, conversation, target = row
    cursor = connection.execute(
        "INSERT INTO held (instance, target, conversation, dedupe_key, event, held_at, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (instance, target, conversation, dedupe_key, event, now, reason),
    )
    bump(connection, ["held"])
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def hold_in_order(
    connection: sqlite3.Connection, row: HoldRow, accepted: float, reason: str
) -> None:
    """Hold a message accepted at `accepted` (a queued job whose route is gone) ahead of
    the held messages of its conversation accepted after it (see `held_at`)."""
    new_id = insert_held(connection, row, accepted, reason)
    rows = connection.execute(
        f"SELECT id, {_MOVABLE} FROM held WHERE instance = ? AND conversation = ?"  # noqa: S608
        " AND dead_at IS NULL AND (held_at > ? OR id = ?) ORDER BY id",
        (row[0], row[4], accepted, new_id),
    ).fetchall()
    connection.executemany(
        f"UPDATE held SET {_MOVE} WHERE id = ?",  # noqa: S608 (constant columns)
        [(*content[1:], place[0]) for place, content in zip(rows, rotated(rows), strict=True)],
    )


def rotated(rows: Sequence[Any]) -> list[Any]:
    """The rows' contents moved one place on, the last first: the new row goes ahead."""
    return [rows[-1], *rows[:-1]]


def _has_held(connection: sqlite3.Connection, instance: str, conversation: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM held WHERE instance = ? AND conversation = ? AND dead_at IS NULL LIMIT 1",
        (instance, conversation),
    ).fetchone()
    return row is not None


def held(
    connection: sqlite3.Connection,
    limit: int,
    instance: str | None,
    target: str | None,
    dead: bool,
    after: int,
) -> list[HeldMessage]:
    query = f"SELECT {_HELD_COLUMNS} FROM held WHERE id > ?"  # noqa: S608 (constant columns)
    query += " AND dead_at IS NOT NULL" if dead else " AND dead_at IS NULL"
    params: list[Any] = [after]
    if instance is not None:
        query += " AND instance = ?"
        params.append(instance)
        if target is not None:
            query += " AND target = ?"
            params.append(target)
    rows = connection.execute(query + " ORDER BY id LIMIT ?", (*params, limit))
    return [held_from_row(row) for row in rows]


def held_stats(connection: sqlite3.Connection) -> list[HeldStats]:
    rows = connection.execute(
        "SELECT instance, target, SUM(dead_at IS NULL), SUM(dead_at IS NOT NULL),"
        " MIN(CASE WHEN dead_at IS NULL THEN held_at END)"
        " FROM held GROUP BY instance, target ORDER BY instance, target"
    )
    return [HeldStats(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def release_held(
    connection: sqlite3.Connection,
    released: Sequence[tuple[int, Sequence[Any]]],
    now: float,
    insert_jobs: Any,
) -> int:
    count = 0
    for held_id, jobs in released:
        gone = connection.execute(
            "DELETE FROM held WHERE id = ? AND dead_at IS NULL", (held_id,)
        ).rowcount
        if gone:
            insert_jobs(connection, jobs, now)
            count += 1
    return count


def expire_held(
    connection: sqlite3.Connection, before: float, reason: str, now: float
) -> list[HeldMessage]:
    rows = connection.execute(
        f"UPDATE held SET dead_at = ?, reason = ? WHERE dead_at IS NULL AND held_at < ?"  # noqa: S608
        f" RETURNING {_HELD_COLUMNS}",
        (now, reason, before),
    ).fetchall()
    return sorted((held_from_row(row) for row in rows), key=lambda m: m.id)


def replay_held(connection: sqlite3.Connection, ids: Sequence[int], now: float) -> int:
    query = "UPDATE held SET dead_at = NULL, held_at = ?, reason = ? WHERE dead_at IS NOT NULL"
    if ids:
        count = sum(
            connection.execute(query + " AND id = ?", (now, NO_ROUTE, held_id)).rowcount
            for held_id in dict.fromkeys(ids)
        )
    else:
        count = connection.execute(query, (now, NO_ROUTE)).rowcount
    if count:
        bump(connection, ["held"])
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
