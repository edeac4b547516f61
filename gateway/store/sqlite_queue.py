"""The job outbox and its lanes in SQLite: plain functions run on the writer thread.

A lane's jobs go out in the order of their *key*: the job id, unless the job was placed
ahead of newer jobs (`position`): a customer message that arrives after newer messages of
its conversation that are still waiting is put ahead of them, by the provider's timestamp
(`sort_time`), but never ahead of a job already handed out or possibly sent.

A `lanes` row exists exactly while its lane has ready jobs, and caches the head (the lowest
ready key) with the head's `available_at`, so a retry that pushes the head back blocks
the whole lane. `claim` walks lanes in head order through `lanes_by_destination` and reads
the leased lanes' prefixes through the partial index `jobs_ready_by_lane`, in one statement
that stops at a bound (`claim_rows`) or one cursor a lane: either way its cost depends on
how many jobs it hands out, not on the size of the backlog.

A lease covers the prefix a claim handed out (`claimed_through`) and ends when all of it is
finished, retried or dead-lettered, so a caller finishing jobs one by one never lets a
second worker into a lane whose next job it is still sending. The claim also marks what it
hands out as attempted (`attempts`, `sending_since`) in the same transaction; `release`
takes the mark back off jobs the caller never sent.

Lane names are global (the pipeline builds them from route, destination and conversation):
a lane's row takes the destination of the job that created it.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from itertools import islice
from operator import itemgetter
from typing import Any, TypeAlias

import orjson

from gateway.store import sqlite_shared as shared
from gateway.store.base import DestinationStats, Job
from gateway.store.rows import job_from_row
from gateway.store.sqlite_history import log_step, log_steps

# (kind, route, source, destination, lane, payload as JSON bytes, provider timestamp)
JobRow: TypeAlias = tuple[str, str, str, str, str, bytes, float | None]
# (route, source, source_id, destination, destination_id, conversation_id, extra as JSON bytes)
MappingRow: TypeAlias = tuple[str, str, str, str, str, str | None, bytes]

_COLUMNS = (
    "id, kind, route, source, destination, lane, payload, state, attempts,"
    " created_at, available_at, last_error, sending_since, dead_at, replay_of"
)
_LANE = 5
_KEY = -1  # the key column the lane prefix selects after the job's columns
_SELECT_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE id = ?"  # noqa: S608 (constant columns)
#: A job's place in its lane (the same expression as the index `jobs_ready_by_lane`).
KEY = "COALESCE(position, id)"
_LANE_PREFIX = (
    f"SELECT {_COLUMNS}, {KEY} FROM jobs"  # noqa: S608 (constant columns)
    f" WHERE lane = ? AND state = 'ready' ORDER BY {KEY} LIMIT ?"
)
#: Distinct texts of `_LANE_PREFIX` for the cursors `claim` keeps open side by side.
_LANE_PREFIXES: list[str] = []


def lane_prefix(index: int) -> str:
    """The lane-prefix query for `claim`'s `index`-th open cursor.

    Python's sqlite3 caches one compiled statement per SQL text, and a cursor still open on
    it makes the next execute of the same text compile a fresh one (about 100 us, most of
    a claim's cost when it reads 50 lanes). Numbered texts keep one cached statement per
    cursor position instead.
    """
    while len(_LANE_PREFIXES) <= index:
        _LANE_PREFIXES.append(f"{_LANE_PREFIX} -- cursor {len(_LANE_PREFIXES)}")
    return _LANE_PREFIXES[index]


_DUE_LANES = (
    "SELECT lane, head FROM lanes WHERE destination = ? AND available_at <= ?"
    " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY head LIMIT ?"
)
#: Up to this many due lanes, `claim` reads one cursor a lane; past it, one statement first.
FEW_LANES = 8
# The ready jobs of the lanes named (a JSON array) with a key up to a bound, unordered, at
# most a number of them: the index `jobs_ready_by_lane` is searched lane by lane, and the
# caller sorts what it gets. `_COUNT_UP_TO` counts the same jobs without reading their rows.
_READY_UP_TO = (
    " FROM jobs WHERE lane IN (SELECT value FROM json_each(?))"  # noqa: S608 (constant)
    f" AND state = 'ready' AND {KEY} <= ? LIMIT ?"
)
_GATHER = f"SELECT {_COLUMNS}, {KEY}{_READY_UP_TO}"
_COUNT_UP_TO = f"SELECT count(*) FROM (SELECT 1{_READY_UP_TO})"  # noqa: S608 (constant text)
_NO_BOUND = float("inf")
_DEAD = f"SELECT {_COLUMNS} FROM jobs WHERE state = 'dead'"  # noqa: S608 (constant columns)
# The highest key a new job must stay behind: what the lane's lease handed out, and any job
# still marked as possibly sent.
_FLOOR = (
    "SELECT MAX(k) FROM (SELECT claimed_through AS k FROM lanes WHERE lane = ?"  # noqa: S608
    f" AND lease_owner IS NOT NULL UNION ALL SELECT {KEY} FROM jobs WHERE lane = ?"
    " AND state = 'ready' AND sending_since IS NOT NULL)"
)
_LANES_OF = "SELECT id, lane FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
_FREE = "lease_owner = NULL, lease_until = NULL, claimed_through = NULL"
# `refresh_lane` and `_release_if_done` for many lanes at once (a JSON array of names).
_DROP_EMPTY_LANES = (
    "DELETE FROM lanes WHERE lane IN (SELECT value FROM json_each(?)) AND NOT EXISTS"
    " (SELECT 1 FROM jobs WHERE jobs.lane = lanes.lane AND jobs.state = 'ready')"
)
_SET_HEADS = (
    "INSERT INTO lanes (lane, destination, head, available_at)"
    " SELECT jobs.lane, jobs.destination, COALESCE(jobs.position, jobs.id), jobs.available_at"
    " FROM json_each(?) AS t"
    " JOIN jobs ON jobs.id = (SELECT head.id FROM jobs AS head WHERE head.lane = t.value"
    " AND head.state = 'ready' ORDER BY COALESCE(head.position, head.id) LIMIT 1)"
    " WHERE true ON CONFLICT (lane) DO UPDATE SET head = excluded.head,"
    " available_at = excluded.available_at"
)
_RELEASE_IF_DONE_MANY = (
    f"UPDATE lanes SET {_FREE} WHERE lane IN (SELECT value FROM json_each(?))"  # noqa: S608
    " AND lease_owner = ? AND (claimed_through IS NULL OR head > claimed_through)"
    " RETURNING available_at"
)


def insert_jobs(connection: sqlite3.Connection, jobs: Sequence[JobRow], now: float) -> list[int]:
    ids: list[int] = []
    new_lanes: dict[str, tuple[str, str, int, float]] = {}
    cursor = connection.cursor()
    moved: set[str] = set()
    for kind, route, source, destination, lane, payload, sort_time in jobs:
        cursor.execute(
            "INSERT INTO jobs (kind, route, source, destination, lane, payload, created_at,"
            " available_at, sort_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, route, source, destination, lane, payload, now, now, sort_time),
        )
        job_id = cursor.lastrowid
        assert job_id is not None
        ids.append(job_id)
        new_lanes.setdefault(lane, (lane, destination, job_id, now))
        if sort_time is not None and place_by_time(connection, lane, job_id, sort_time):
            moved.add(lane)
    # New jobs have the highest ids, so a lane that already has a row keeps its head
    # (unless a job was placed ahead of others: those lanes are re-derived).
    cursor.executemany(
        "INSERT INTO lanes (lane, destination, head, available_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (lane) DO NOTHING",
        new_lanes.values(),
    )
    for lane in moved:
        refresh_lane(connection, lane)
    return ids


def place_by_time(connection: sqlite3.Connection, lane: str, job_id: int, sort_time: float) -> bool:
    """Put a just-inserted message ahead of the newer messages of its lane that wait, but
    behind everything handed out or possibly sent; True if it moved."""
    newer = connection.execute(
        "SELECT 1 FROM jobs WHERE lane = ? AND state = 'ready' AND sort_time > ? LIMIT 1",
        (lane, sort_time),
    ).fetchone()
    if newer is None:
        return False  # the usual case: in order, it stays at the tail
    floor = connection.execute(
        _FLOOR,
        (lane, lane),
    ).fetchone()[0]
    low = float("-inf") if floor is None else float(floor)
    found = connection.execute(
        f"SELECT MIN({KEY}) FROM jobs WHERE lane = ? AND state = 'ready'"  # noqa: S608
        f" AND sort_time > ? AND {KEY} > ? AND id <> ?",
        (lane, sort_time, low, job_id),
    ).fetchone()[0]
    if found is None:
        return False
    before = connection.execute(
        f"SELECT MAX({KEY}) FROM jobs WHERE lane = ? AND state = 'ready'"  # noqa: S608
        f" AND {KEY} < ?",
        (lane, found),
    ).fetchone()[0]
    below = float(found) - 1.0 if before is None else float(before)
    connection.execute(
        "UPDATE jobs SET position = ? WHERE id = ?", ((below + float(found)) / 2.0, job_id)
    )
    return True


def ingest(
    connection: sqlite3.Connection,
    items: Sequence[tuple[str, str, bytes, Sequence[JobRow], bool, str | None, str | None]],
    now: float,
    held: list[str] | None = None,
) -> list[int | None]:
    """Insert new events with their jobs; the dedupe keys of those held go into `held`."""
    results: list[int | None] = []
    for instance, dedupe_key, event, jobs, hold, conversation, target in items:
        cursor = connection.execute(
            "INSERT INTO events (instance, dedupe_key, event, received_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (instance, dedupe_key) DO NOTHING",
            (instance, dedupe_key, event, now),
        )
        if cursor.rowcount == 0:
            results.append(None)
            continue
        results.append(cursor.lastrowid)
        # A message no route carries, or one behind such a message, waits in `held`.
        row = (instance, dedupe_key, event, hold, conversation, target)
        if not shared.hold_if_needed(connection, row, bool(jobs), now):
            insert_jobs(connection, jobs, now)
        elif held is not None:
            held.append(dedupe_key)
    return results


def claim(
    connection: sqlite3.Connection,
    destination: str,
    owner: str,
    limit: int,
    lease_seconds: float,
    now: float,
) -> list[Job]:
    if limit <= 0:
        return []
    lanes = connection.execute(_DUE_LANES, (destination, now, now, limit)).fetchall()
    rows = claim_rows(connection, lanes, limit)
    claimed_through = {row[_LANE]: row[_KEY] for row in rows}  # rows ascend: last key wins
    # Lanes that got no job (the limit ran out first) are simply never leased.
    connection.executemany(
        "UPDATE lanes SET lease_owner = ?, lease_until = ?, claimed_through = ? WHERE lane = ?",
        [(owner, now + lease_seconds, last, lane) for lane, last in claimed_through.items()],
    )
    # The attempt is recorded with the claim (one commit before the provider call, not two);
    # the rows read above, from before this mark, are what the caller gets.
    connection.executemany(
        "UPDATE jobs SET attempts = attempts + 1, sending_since = ? WHERE id = ?",
        [(now, row[0]) for row in rows],
    )
    return [job_from_row(row[:_KEY]) for row in rows]


def claim_rows(connection: sqlite3.Connection, lanes: Sequence[Any], limit: int) -> list[Any]:
    """The first `limit` jobs by key of `lanes` (due lanes in head order, as `(lane, head)`),
    so that each lane's share is a prefix of it: job columns, then the key.

    Many lanes are read in one statement (`_gathered`); a few, or lanes holding more jobs
    than that statement sorts, one cursor a lane (`merged_prefixes`)."""
    if len(lanes) > FEW_LANES:
        rows = _gathered(connection, lanes, limit)
        if rows is not None:
            return rows
    return merged_prefixes(connection, [lane for lane, _ in lanes], limit)


def _gathered(connection: sqlite3.Connection, lanes: Sequence[Any], limit: int) -> list[Any] | None:
    """`claim_rows` in one read of the jobs, or None when the lanes hold too many for it.

    With `limit` lanes, their heads alone are `limit` jobs with keys up to the highest head,
    so no job past it can be among the first `limit`: the read stops there and holds about
    one job a lane (a round of a backlog). With fewer lanes there is no such bound, and the
    read is made only if it holds all their jobs, at most `limit`. The jobs are counted
    first, in the index alone: a lane too deep for one read costs that count, not the rows.
    """
    bounded = len(lanes) == limit
    most = 2 * limit if bounded else limit
    highest = lanes[-1][1] if bounded else _NO_BOUND
    where = (orjson.dumps([lane for lane, _ in lanes]), highest, most + 1)
    if connection.execute(_COUNT_UP_TO, where).fetchone()[0] > most:
        return None  # a lane deep below the bound: read lane by lane
    rows = connection.execute(_GATHER, where).fetchall()
    rank = {lane: place for place, (lane, _) in enumerate(lanes)}
    # Equal keys in two lanes go in lane order, as `merged_prefixes` puts them.
    rows.sort(key=lambda row: (row[_KEY], rank[row[_LANE]]))
    del rows[limit:]
    return rows


def merged_prefixes(connection: sqlite3.Connection, lanes: Sequence[str], limit: int) -> list[Any]:
    """`claim_rows` one cursor a lane, merged lazily in key order: reads at most
    `limit + len(lanes)` rows (and a cut by key leaves each lane a prefix)."""
    cursors = [
        connection.execute(lane_prefix(index), (lane, limit)) for index, lane in enumerate(lanes)
    ]
    rows = list(islice(heapq.merge(*cursors, key=itemgetter(_KEY)), limit))
    for cursor in cursors:
        cursor.close()
    return rows


def finish(
    connection: sqlite3.Connection,
    finished: Sequence[tuple[int, Sequence[MappingRow], Sequence[JobRow]]],
    owner: str,
    now: float,
) -> bool:
    """True when a lane it freed has a job due: one that came while the lane was leased."""
    # A batch's statements run once for all its jobs (their ids as one JSON array), not once
    # a job: a delivered batch of 50 was some 250 statements.
    lanes_of = dict(
        connection.execute(_LANES_OF, (orjson.dumps([job_id for job_id, _, _ in finished]),))
    )
    # Someone whose lease outlived ours finished the missing ones already, with follow-ups.
    done = [entry for entry in finished if entry[0] in lanes_of]
    if not done:
        return False
    ids = orjson.dumps([job_id for job_id, _, _ in done])
    log_steps(connection, ids, "delivered", now, None)
    connection.execute("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    connection.executemany(
        "INSERT INTO id_map (route, source, source_id, destination, destination_id,"
        " conversation_id, extra, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (route, source, source_id) DO NOTHING",
        [(*mapping, now) for _, mappings, _ in done for mapping in mappings],
    )
    followups = [job for _, _, jobs in done for job in jobs]
    if followups:
        insert_jobs(connection, followups, now)
    lanes = orjson.dumps(list(dict.fromkeys(lanes_of[job_id] for job_id, _, _ in done)))
    refresh_lanes(connection, lanes)
    # Lanes left without jobs are gone by now: a freed lane that remains has work behind.
    freed = connection.execute(_RELEASE_IF_DONE_MANY, (lanes, owner)).fetchall()
    return any(available_at <= now for (available_at,) in freed)


def retry(
    connection: sqlite3.Connection,
    job_id: int,
    owner: str,
    available_at: float,
    error: str,
    possibly_sent_since: float | None,
) -> None:
    lane = _ready_lane_of(connection, job_id)
    if lane is None:
        return
    connection.execute(
        "UPDATE jobs SET available_at = ?, last_error = ?, sending_since = ? WHERE id = ?",
        (available_at, error, possibly_sent_since, job_id),
    )
    refresh_lane(connection, lane)
    # The rest of the claimed prefix must wait behind the retried job, so the lease ends.
    release(connection, owner, [lane])


def dead_letter(
    connection: sqlite3.Connection, job_id: int, owner: str, reason: str, now: float
) -> None:
    lane = _ready_lane_of(connection, job_id)
    if lane is None:
        return
    connection.execute(
        "UPDATE jobs SET state = 'dead', last_error = ?, dead_at = ?, sending_since = NULL"
        " WHERE id = ?",
        (reason, now, job_id),
    )
    refresh_lane(connection, lane)
    _release_if_done(connection, lane, owner)


def remove_ready(connection: sqlite3.Connection, job_id: int, owner: str) -> bool:
    """Delete a ready job (its message is kept elsewhere, e.g. held); False if not ready."""
    lane = _ready_lane_of(connection, job_id)
    if lane is None:
        return False
    connection.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    refresh_lane(connection, lane)
    _release_if_done(connection, lane, owner)
    return True


def renew(connection: sqlite3.Connection, owner: str, lanes: Sequence[str], until: float) -> None:
    connection.executemany(
        "UPDATE lanes SET lease_until = ? WHERE lane = ? AND lease_owner = ?",
        [(until, lane, owner) for lane in lanes],
    )


def release(
    connection: sqlite3.Connection,
    owner: str,
    lanes: Sequence[str],
    unsent: Sequence[int] = (),
) -> None:
    # A lane leased by another owner was claimed again since: the mark is that claim's.
    connection.executemany(
        "UPDATE jobs SET attempts = attempts - 1, sending_since = NULL"
        " WHERE id = ? AND state = 'ready' AND sending_since IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM lanes WHERE lanes.lane = jobs.lane AND lanes.lease_owner <> ?)",
        [(job_id, owner) for job_id in unsent],
    )
    connection.executemany(
        f"UPDATE lanes SET {_FREE} WHERE lane = ? AND lease_owner = ?",  # noqa: S608 (constant)
        [(lane, owner) for lane in lanes],
    )


def refresh_lane(connection: sqlite3.Connection, lane: str) -> None:
    """Re-derive the lane row from its jobs after its head may have changed."""
    head = connection.execute(
        f"SELECT {KEY}, destination, available_at FROM jobs"  # noqa: S608 (constant)
        f" WHERE lane = ? AND state = 'ready' ORDER BY {KEY} LIMIT 1",
        (lane,),
    ).fetchone()
    if head is None:
        connection.execute("DELETE FROM lanes WHERE lane = ?", (lane,))
        return
    connection.execute(
        "INSERT INTO lanes (lane, destination, head, available_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (lane) DO UPDATE SET head = excluded.head,"
        " available_at = excluded.available_at",
        (lane, head[1], head[0], head[2]),
    )


def refresh_lanes(connection: sqlite3.Connection, lanes: bytes) -> None:
    """`refresh_lane` for every lane `lanes` lists (a JSON array), in two statements."""
    connection.execute(_DROP_EMPTY_LANES, (lanes,))
    connection.execute(_SET_HEADS, (lanes,))


def _release_if_done(connection: sqlite3.Connection, lane: str, owner: str) -> None:
    # The head is the lowest ready key: above `claimed_through`, nothing handed out is left.
    connection.execute(
        f"UPDATE lanes SET {_FREE} WHERE lane = ? AND lease_owner = ?"  # noqa: S608 (constant)
        " AND (claimed_through IS NULL OR head > claimed_through)",
        (lane, owner),
    )


def _ready_lane_of(connection: sqlite3.Connection, job_id: int) -> str | None:
    row = connection.execute(
        "SELECT lane FROM jobs WHERE id = ? AND state = 'ready'", (job_id,)
    ).fetchone()
    return None if row is None else str(row[0])


_REPLAYED = "kind, route, source, destination, lane, payload, created_at, last_error"


def replay(
    connection: sqlite3.Connection,
    job_ids: Sequence[int],
    lane: str | None,
    since: float | None,
    until: float | None,
    now: float,
) -> list[tuple[int, int]]:
    filters = ["state = 'dead'"]
    params: list[Any] = []
    for clause, value in (("lane = ?", lane), ("dead_at >= ?", since), ("dead_at <= ?", until)):
        if value is not None:
            filters.append(clause)
            params.append(value)
    select = f"SELECT id, lane FROM jobs WHERE {' AND '.join(filters)}"  # noqa: S608 (constant clauses)
    if job_ids:
        rows = [
            row
            for job_id in dict.fromkeys(job_ids)
            for row in connection.execute(f"{select} AND id = ?", (*params, job_id))
        ]
    else:
        rows = connection.execute(select, params).fetchall()
    # A replayed job gets a new id at the tail of its lane: a worker may hold the lane's
    # lease right now, and its lease covers the ids it was handed, so an old id slipped
    # back in ahead of them would stall the lane until the lease expired.
    pairs: list[tuple[int, int]] = []
    for job_id, _ in sorted(rows):
        cursor = connection.execute(
            f"INSERT INTO jobs ({_REPLAYED}, state, attempts, available_at, replay_of)"  # noqa: S608
            f" SELECT {_REPLAYED}, 'ready', 0, ?, id FROM jobs WHERE id = ?",
            (now, job_id),
        )
        new_id = cursor.lastrowid
        assert new_id is not None
        log_step(connection, job_id, "replayed", now, str(new_id))
        connection.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        pairs.append((job_id, new_id))
    for replayed_lane in {lane for _, lane in rows}:
        refresh_lane(connection, replayed_lane)
    return pairs


def dead_letters(
    connection: sqlite3.Connection, limit: int, destination: str | None, lane: str | None
) -> list[Job]:
    query = _DEAD
    params: list[Any] = []
    if destination is not None:
        query += " AND destination = ?"
        params.append(destination)
    if lane is not None:
        query += " AND lane = ?"
        params.append(lane)
    rows = connection.execute(f"{query} ORDER BY dead_at, id LIMIT ?", (*params, limit))
    return [job_from_row(row) for row in rows]


def get_job(connection: sqlite3.Connection, job_id: int) -> Job | None:
    row = connection.execute(_SELECT_JOB, (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def next_due(connection: sqlite3.Connection, destination: str) -> float | None:
    # A leased lane is due when its lease runs out (or earlier, when its owner lets go).
    row = connection.execute(
        "SELECT MIN(MAX(available_at, COALESCE(lease_until, available_at)))"
        " FROM lanes WHERE destination = ?",
        (destination,),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def destinations_with_work(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute("SELECT DISTINCT destination FROM lanes ORDER BY destination")
    return [str(row[0]) for row in rows]


# `jobs_sending` holds exactly the jobs this counts (migration 0006).
SENDING = (
    "SELECT COUNT(*) FROM jobs WHERE destination = ? AND state = 'ready'"
    " AND kind = 'send' AND sending_since >= ?"
)


def sending(connection: sqlite3.Connection, destination: str, since: float) -> int:
    row = connection.execute(SENDING, (destination, since)).fetchone()
    return int(row[0])


def stats(connection: sqlite3.Connection) -> list[DestinationStats]:
    rows = connection.execute(
        "SELECT destination, SUM(state = 'ready'), SUM(state = 'dead'),"
        " MIN(CASE WHEN state = 'ready' THEN created_at END)"
        " FROM jobs GROUP BY destination ORDER BY destination"
    )
    return [DestinationStats(row[0], row[1], row[2], row[3]) for row in rows]


def free_all_leases(conn: sqlite3.Connection) -> None:
    """Drop every lease: called at open, when no other process can hold one."""
    conn.execute(f"UPDATE lanes SET {_FREE} WHERE lease_owner IS NOT NULL")  # noqa: S608
