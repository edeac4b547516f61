"""The job outbox and its lanes in PostgreSQL, shared by several gateway processes.

Same model as `sqlite_queue`: a `lanes` row exists exactly while its lane has ready jobs,
caches the head (lowest ready id) with the head's `available_at`, and carries the lease.
Jobs go out in the order of their key, `COALESCE(position, id)`: a customer message that
arrives after newer waiting messages of its conversation is placed ahead of them by the
provider's timestamp (`place_late`, see `sqlite_queue`). What changes with several
processes:

* `claim` is one statement: it locks due, unleased lanes with `FOR UPDATE SKIP LOCKED` (two
  claimers never wait for, nor share, a lane), reads each lane's prefix, leases the lanes
  that got jobs and marks the jobs as attempted (returning them as they were before). An
  expired lease is simply a due lane, so a dead process's lanes are taken over by whoever
  claims next; nothing frees leases at start.
* Every other writer locks a lane's row *before* reading the lane's jobs in a later
  statement (read committed: each statement sees what committed before it started). Ingest
  locks its lanes' rows, or makes them, before it inserts its jobs (`postgres_ingest`). So
  a writer that finds a lane empty and deletes its row cannot miss a job committed by
  someone else: that job's ingest either committed before the lock was granted (and is seen)
  or waits for the lock and re-creates the row.
* Lane locks are taken in lane order, before any other lock of the transaction; a deadlock
  that still happens (a finish's follow-ups meeting an ingest on new lanes) is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import psycopg

from gateway.store.base import BEHIND_HELD, NO_ROUTE, DestinationStats, Job
from gateway.store.rows import job_from_row

Conn: TypeAlias = psycopg.AsyncConnection[tuple[Any, ...]]
# (kind, route, source, destination, lane, payload as JSON bytes, provider timestamp)
JobRow: TypeAlias = tuple[str, str, str, str, str, bytes, float | None]
#: A job's place in its lane (the same expression as the index `jobs_ready_by_lane`).
KEY = "COALESCE(position, id)"
# (route, source, source_id, destination, destination_id, conversation_id, extra as JSON bytes)
MappingRow: TypeAlias = tuple[str, str, str, str, str, str | None, bytes]

COLUMNS = (
    "id, kind, route, source, destination, lane, payload, state, attempts,"
    " created_at, available_at, last_error, sending_since, dead_at, replay_of"
)
_FREE = "lease_owner = NULL, lease_until = NULL, claimed_through = NULL"
_JOB_ARRAYS = (
    "%(kind)s::text[], %(route)s::text[], %(source)s::text[], %(destination)s::text[],"
    " %(lane)s::text[], %(payload)s::bytea[], %(sort_time)s::float8[]"
)
# New jobs have the highest ids, so an existing lane keeps its head; the row is locked all
# the same (ON CONFLICT ... WHERE locks rows it does not update), which is the point.
_UPSERT_HEADS = (
    "INSERT INTO lanes (lane, destination, head, available_at)"
    " SELECT lane, min(destination), min(id), %(now)s FROM new GROUP BY lane ORDER BY lane"
    " ON CONFLICT (lane) DO UPDATE SET head = excluded.head,"
    " available_at = excluded.available_at WHERE excluded.head < lanes.head"
)
_INSERT_NEW = (
    "INSERT INTO jobs (kind, route, source, destination, lane, payload, created_at,"
    " available_at, sort_time) SELECT kind, route, source, destination, lane, payload,"
    " %(now)s, %(now)s, sort_time"
)
ENQUEUE = (
    f"WITH new AS ({_INSERT_NEW} FROM unnest({_JOB_ARRAYS})"  # noqa: S608 (constant SQL)
    " WITH ORDINALITY AS j(kind, route, source, destination, lane, payload, sort_time, n)"
    " ORDER BY n RETURNING id, lane, destination, sort_time),"
    f" heads AS ({_UPSERT_HEADS})"
    # As in INGEST: the new messages to place ahead of newer waiting ones of their lane.
    " SELECT id, sort_time IS NOT NULL AND EXISTS (SELECT 1 FROM jobs o WHERE o.lane = new.lane"
    " AND o.state = 'ready' AND o.sort_time > new.sort_time) FROM new ORDER BY id"
)
# Run after `postgres_ingest.lock_lanes` in the same transaction. Events first, inserted in key
# order so that groups with common keys (a webhook redelivered to two processes) wait for
# each other instead of deadlocking, with ids drawn in arrival order (ON CONFLICT DO
# NOTHING also drops a key repeated within the call: the first occurrence is inserted).
# Then held messages (no route, or behind a held message of their conversation: `held` as
# the statement found it, or an earlier item of this call), then the jobs of the other
# items whose event was new, then lane heads; placeholders of lanes that got no job go.
# Each item has its own time (`at`). A hold bumps the "held" version; the result says
# which items were held.
INGEST = (
    "WITH item AS (SELECT *, nextval(pg_get_serial_sequence('events', 'id')) AS eid"  # noqa: S608
    " FROM unnest(%(instance)s::text[], %(key)s::text[], %(event)s::bytea[],"
    " %(hold)s::boolean[], %(conversation)s::text[], %(target)s::text[], %(at)s::float8[])"
    " WITH ORDINALITY AS i(instance, dedupe_key, event, hold, conversation, target, at, n)),"
    " ev AS (INSERT INTO events (id, instance, dedupe_key, event, received_at)"
    " OVERRIDING SYSTEM VALUE SELECT eid, instance, dedupe_key, event, at FROM item"
    ' ORDER BY instance COLLATE "C", dedupe_key COLLATE "C", n'
    " ON CONFLICT (instance, dedupe_key) DO NOTHING RETURNING id, instance, dedupe_key),"
    " firsts AS (SELECT DISTINCT ON (item.instance, item.dedupe_key) item.*, ev.id"
    " FROM item JOIN ev USING (instance, dedupe_key)"
    " ORDER BY item.instance, item.dedupe_key, item.n),"
    " parked AS (SELECT f.n, f.instance, f.target, f.conversation, f.dedupe_key, f.event,"
    " f.at, CASE WHEN f.hold THEN %(no_route)s ELSE %(behind)s END AS reason FROM firsts f"
    " WHERE f.conversation IS NOT NULL AND (f.hold OR (f.n = ANY(%(item)s::bigint[]) AND ("
    "EXISTS (SELECT 1 FROM held h WHERE h.instance = f.instance"
    " AND h.conversation = f.conversation AND h.dead_at IS NULL)"
    " OR EXISTS (SELECT 1 FROM firsts g WHERE g.instance = f.instance"
    " AND g.conversation = f.conversation AND g.n < f.n AND g.hold))))),"
    " kept AS (INSERT INTO held (instance, target, conversation, dedupe_key, event, held_at,"
    " reason) SELECT instance, target, conversation, dedupe_key, event, at, reason"
    " FROM parked ORDER BY n RETURNING id),"
    " new AS (INSERT INTO jobs (kind, route, source, destination, lane, payload, created_at,"
    " available_at, sort_time) SELECT j.kind, j.route, j.source, j.destination, j.lane,"
    f" j.payload, firsts.at, firsts.at, j.sort_time FROM unnest(%(item)s::bigint[], {_JOB_ARRAYS})"
    " WITH ORDINALITY AS j(item, kind, route, source, destination, lane, payload, sort_time,"
    " n)"
    " JOIN firsts ON firsts.n = j.item"
    " WHERE NOT EXISTS (SELECT 1 FROM parked WHERE parked.n = j.item)"
    " ORDER BY j.n RETURNING id, lane, destination, sort_time, available_at),"
    " heads AS (INSERT INTO lanes (lane, destination, head, available_at)"
    " SELECT lane, min(destination), min(id), (array_agg(available_at ORDER BY id))[1]"
    ' FROM new GROUP BY lane ORDER BY lane COLLATE "C"'
    " ON CONFLICT (lane) DO UPDATE SET head = excluded.head,"
    " available_at = excluded.available_at WHERE excluded.head < lanes.head),"
    " emptied AS (DELETE FROM lanes WHERE lane = ANY(%(lanes)s::text[])"
    " AND head = 'Infinity' AND NOT EXISTS (SELECT 1 FROM new WHERE new.lane = lanes.lane)),"
    " bumped AS (INSERT INTO state_versions (scope, version) SELECT 'held', 1"
    " WHERE EXISTS (SELECT 1 FROM parked) ON CONFLICT (scope)"
    " DO UPDATE SET version = state_versions.version + 1)"
    " SELECT n, id, EXISTS (SELECT 1 FROM parked WHERE parked.n = firsts.n),"
    # Messages that arrived after newer ones of their lane still waiting (as the statement
    # found the lanes, or earlier in this call): `place_late` puts them ahead.
    " (SELECT array_agg(new.id) FROM new WHERE new.sort_time IS NOT NULL AND (EXISTS"
    " (SELECT 1 FROM jobs o WHERE o.lane = new.lane AND o.state = 'ready'"
    " AND o.sort_time > new.sort_time) OR EXISTS (SELECT 1 FROM new o"
    " WHERE o.lane = new.lane AND o.id < new.id AND o.sort_time > new.sort_time))) FROM firsts"
)
CLAIM = (
    "WITH picked AS (SELECT lane FROM lanes WHERE destination = %(destination)s"  # noqa: S608
    " AND available_at <= %(now)s AND (lease_until IS NULL OR lease_until <= %(now)s)"
    " ORDER BY head LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
    f" taken AS (SELECT j.* FROM picked CROSS JOIN LATERAL (SELECT {COLUMNS}, {KEY} AS key"
    f" FROM jobs WHERE jobs.lane = picked.lane AND jobs.state = 'ready' ORDER BY {KEY}"
    " LIMIT %(limit)s) AS j ORDER BY j.key LIMIT %(limit)s),"
    " leased AS (UPDATE lanes SET lease_owner = %(owner)s, lease_until = %(until)s,"
    " claimed_through = t.last FROM (SELECT lane, max(key) AS last FROM taken GROUP BY lane)"
    " AS t WHERE lanes.lane = t.lane),"
    " marked AS (UPDATE jobs SET attempts = jobs.attempts + 1, sending_since = %(now)s"
    " FROM taken WHERE jobs.id = taken.id AND jobs.state = 'ready')"
    f" SELECT {COLUMNS} FROM taken ORDER BY key"
)
# Jobs claimed but never sent lose their claim's mark, unless their lane was claimed again
# by someone else (then the mark is that claim's); the caller locked those lanes first.
_UNMARK = (
    "UPDATE jobs SET attempts = attempts - 1, sending_since = NULL"
    " WHERE id = ANY(%s::bigint[]) AND state = 'ready' AND sending_since IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM lanes WHERE lanes.lane = jobs.lane"
    " AND lanes.lease_owner <> %s)"
)


# The highest key a new job must stay behind: what the lane's lease handed out, and any job
# still marked as possibly sent.
_FLOOR = (
    "SELECT max(k) FROM (SELECT claimed_through AS k FROM lanes"  # noqa: S608 (constant)
    f" WHERE lane = %(lane)s AND lease_owner IS NOT NULL UNION ALL SELECT {KEY} FROM jobs"
    " WHERE lane = %(lane)s AND state = 'ready' AND sending_since IS NOT NULL) AS f"
)
_HEADS = (
    "SELECT l.lane, h.key, h.destination, h.available_at"  # noqa: S608 (constant)
    f" FROM unnest(%s::text[]) AS l(lane) CROSS JOIN LATERAL (SELECT {KEY} AS key,"
    f" destination, available_at FROM jobs WHERE jobs.lane = l.lane AND jobs.state = 'ready'"
    f" ORDER BY {KEY} LIMIT 1) AS h"
)


def job_arrays(jobs: Sequence[JobRow]) -> dict[str, list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(7)]
    for row in jobs:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    names = ("kind", "route", "source", "destination", "lane", "payload", "sort_time")
    return dict(zip(names, columns, strict=True))


async def insert_jobs(conn: Conn, jobs: Sequence[JobRow], now: float) -> list[int]:
    """Enqueue `jobs`; in a transaction when they may include messages (`place_late`)."""
    if not jobs:
        return []
    cursor = await conn.execute(ENQUEUE, {**job_arrays(jobs), "now": now})
    rows = await cursor.fetchall()
    late = [job_id for job_id, is_late in rows if is_late]
    if late:
        await place_late(conn, late)
    return [row[0] for row in rows]


async def ingest(
    conn: Conn,
    items: Sequence[tuple[str, str, bytes, Sequence[JobRow], bool, str | None, str | None]],
    at: Sequence[float],
) -> tuple[list[int | None], bool, list[int]]:
    """New event ids (None: duplicate), whether any item was held, and the new jobs to place
    ahead of newer ones (`place_late`). `at`: each item's time. In a transaction, after
    `postgres_ingest.lock_lanes` locked the items' lanes."""
    jobs: list[JobRow] = []
    owners: list[int] = []
    for n, item in enumerate(items, start=1):
        jobs.extend(item[3])
        owners.extend([n] * len(item[3]))
    params = {
        "instance": [i[0] for i in items],
        "key": [i[1] for i in items],
        "event": [i[2] for i in items],
        "hold": [i[4] for i in items],
        "conversation": [i[5] for i in items],
        "target": [i[6] for i in items],
        "at": list(at),
        "item": owners,
        **job_arrays(jobs),
        "lanes": sorted({job[4] for job in jobs}),
        "no_route": NO_ROUTE,
        "behind": BEHIND_HELD,
    }
    cursor = await conn.execute(INGEST, params)
    rows = await cursor.fetchall()
    new = {n: event_id for n, event_id, _, _ in rows}
    held = any(was_held for _, _, was_held, _ in rows)
    late = sorted({job for *_, jobs in rows for job in jobs or ()})
    return [new.get(n) for n in range(1, len(items) + 1)], held, late


async def place_late(conn: Conn, ids: Sequence[int]) -> None:
    """In the caller's transaction: put each of these messages ahead of the newer messages
    of its lane that wait, but behind everything handed out or possibly sent."""
    cursor = await conn.execute(
        "SELECT id, lane, sort_time FROM jobs WHERE id = ANY(%s::bigint[]) AND state = 'ready'"
        " AND sort_time IS NOT NULL ORDER BY id",
        (list(ids),),
    )
    late = await cursor.fetchall()
    locked = await lock_lanes(conn, [lane for _, lane, _ in late])
    for job_id, lane, sort_time in late:
        cursor = await conn.execute(
            _FLOOR,
            {"lane": lane},
        )
        floor = (await cursor.fetchone() or (None,))[0]
        cursor = await conn.execute(
            f"SELECT min({KEY}) FROM jobs WHERE lane = %(lane)s AND state = 'ready'"  # noqa: S608
            f" AND sort_time > %(time)s AND {KEY} > %(floor)s AND id <> %(id)s",
            {"lane": lane, "time": sort_time, "floor": floor or float("-inf"), "id": job_id},
        )
        found = (await cursor.fetchone() or (None,))[0]
        if found is None:
            continue
        cursor = await conn.execute(
            f"SELECT max({KEY}) FROM jobs WHERE lane = %s AND state = 'ready'"  # noqa: S608
            f" AND {KEY} < %s",
            (lane, found),
        )
        before = (await cursor.fetchone() or (None,))[0]
        below = float(found) - 1.0 if before is None else float(before)
        await conn.execute(
            "UPDATE jobs SET position = %s WHERE id = %s", ((below + float(found)) / 2.0, job_id)
        )
    await refresh_lanes(conn, [lane for _, lane, _ in late], locked)


async def claim(
    conn: Conn, destination: str, owner: str, limit: int, lease_seconds: float, now: float
) -> list[Job]:
    if limit <= 0:
        return []
    params = {
        "destination": destination,
        "owner": owner,
        "limit": limit,
        "now": now,
        "until": now + lease_seconds,
    }
    cursor = await conn.execute(CLAIM, params)
    return [job_from_row(row) for row in await cursor.fetchall()]


async def lock_lanes(conn: Conn, lanes: Sequence[str]) -> set[str]:
    """Lock the rows of `lanes` that exist, in lane order; returns those lanes."""
    cursor = await conn.execute(
        "SELECT lane FROM lanes WHERE lane = ANY(%s::text[]) ORDER BY lane FOR UPDATE",
        (sorted(set(lanes)),),
    )
    return {row[0] for row in await cursor.fetchall()}


async def refresh_lanes(conn: Conn, lanes: Sequence[str], locked: set[str]) -> None:
    """Re-derive lane rows from their jobs; the caller locked `locked` beforehand."""
    if not lanes:
        return
    names = sorted(set(lanes))
    cursor = await conn.execute(
        _HEADS,
        (names,),
    )
    heads = {row[0]: row for row in await cursor.fetchall()}
    # Only rows we hold may go: a row that appeared since was made by an ingest whose
    # jobs we could not see yet.
    gone = [lane for lane in names if lane not in heads and lane in locked]
    if gone:
        await conn.execute("DELETE FROM lanes WHERE lane = ANY(%s::text[])", (gone,))
    held = [heads[lane] for lane in names if lane in heads and lane in locked]
    if held:
        await conn.execute(
            "UPDATE lanes SET head = h.head, available_at = h.available_at"
            " FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS h(lane, head, available_at)"
            " WHERE lanes.lane = h.lane",
            ([r[0] for r in held], [r[1] for r in held], [r[3] for r in held]),
        )
    fresh = [heads[lane] for lane in names if lane in heads and lane not in locked]
    if fresh:
        # No row when we locked: someone may insert one meanwhile; the lower head wins.
        await conn.execute(
            "INSERT INTO lanes (lane, destination, head, available_at)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[])"
            " ON CONFLICT (lane) DO UPDATE SET head = excluded.head,"
            " available_at = excluded.available_at WHERE excluded.head < lanes.head",
            (
                [r[0] for r in fresh],
                [r[2] for r in fresh],
                [r[1] for r in fresh],
                [r[3] for r in fresh],
            ),
        )


async def release_if_done(conn: Conn, lanes: Sequence[str], owner: str) -> list[float]:
    """Free those of `lanes` whose claimed prefix is done; returns their `available_at`."""
    # The head is the lowest ready key: above `claimed_through`, nothing handed out is left.
    cursor = await conn.execute(
        f"UPDATE lanes SET {_FREE} WHERE lane = ANY(%s::text[]) AND lease_owner = %s"  # noqa: S608
        " AND (claimed_through IS NULL OR head > claimed_through) RETURNING available_at",
        (sorted(set(lanes)), owner),
    )
    return [float(row[0]) for row in await cursor.fetchall()]


async def renew(conn: Conn, owner: str, lanes: Sequence[str], until: float) -> None:
    await conn.execute(
        "UPDATE lanes SET lease_until = %s WHERE lane = ANY(%s::text[]) AND lease_owner = %s",
        (until, sorted(set(lanes)), owner),
    )


async def release(
    conn: Conn, owner: str, lanes: Sequence[str], unsent: Sequence[int] = ()
) -> set[str]:
    """Free `owner`'s leases of `lanes` and undo the marks of `unsent`; returns the
    destinations of the lanes freed. With `unsent`, run it in a transaction."""
    if unsent:
        ids = sorted(set(unsent))
        cursor = await conn.execute(
            "SELECT DISTINCT lane FROM jobs WHERE id = ANY(%s::bigint[])", (ids,)
        )
        # Locked before the jobs are read, so no claim takes these lanes (and marks their
        # jobs) between the lease check and the update.
        await lock_lanes(conn, [*lanes, *(row[0] for row in await cursor.fetchall())])
        await conn.execute(_UNMARK, (ids, owner))
    if not lanes:
        return set()
    cursor = await conn.execute(
        f"UPDATE lanes SET {_FREE} WHERE lane = ANY(%s::text[])"  # noqa: S608
        " AND lease_owner = %s RETURNING destination",
        (sorted(set(lanes)), owner),
    )
    return {row[0] for row in await cursor.fetchall()}


async def finish(
    conn: Conn,
    finished: Sequence[tuple[int, Sequence[MappingRow], Sequence[JobRow]]],
    owner: str,
    now: float,
) -> tuple[set[str], bool]:
    """Returns the destinations of the follow-ups it enqueued, and whether a lane it freed
    has a job due (one that came while the lane was leased)."""
    ids = [job_id for job_id, _, _ in finished]
    cursor = await conn.execute("SELECT lane FROM jobs WHERE id = ANY(%s::bigint[])", (ids,))
    lanes = {row[0] for row in await cursor.fetchall()}
    followup_lanes = {job[4] for _, _, followups in finished for job in followups}
    locked = await lock_lanes(conn, sorted(lanes | followup_lanes))
    await conn.execute(
        "INSERT INTO job_log (job_id, step, at, attempt, kind, route, source, destination,"
        " lane, created_at, started_at, message, replay_of) SELECT id, 'delivered', %s,"
        " attempts, kind, route, source, destination, lane, created_at, sending_since,"
        " convert_from(payload, 'UTF8')::jsonb #>> '{event,native_id}', replay_of"
        " FROM jobs WHERE id = ANY(%s::bigint[])",
        (now, ids),
    )
    cursor = await conn.execute(
        "DELETE FROM jobs WHERE id = ANY(%s::bigint[]) RETURNING id, lane", (ids,)
    )
    deleted = {row[0]: row[1] for row in await cursor.fetchall()}
    # A job that is gone already was finished, with its follow-ups, by a later lease holder.
    done = [(m, f) for job_id, m, f in finished if job_id in deleted]
    mappings = [mapping for m, _ in done for mapping in m]
    if mappings:
        columns = list(zip(*mappings, strict=True))
        await conn.execute(
            "INSERT INTO id_map (route, source, source_id, destination, destination_id,"
            " conversation_id, extra, created_at)"
            " SELECT route, source, source_id, destination, destination_id, conversation_id,"
            " extra, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::bytea[]) WITH ORDINALITY"
            " AS m(route, source, source_id, destination, destination_id, conversation_id,"
            " extra, n) ORDER BY n ON CONFLICT (route, source, source_id) DO NOTHING",
            (now, *[list(c) for c in columns]),
        )
    followups = [job for _, f in done for job in f]
    await insert_jobs(conn, followups, now)
    touched = sorted(set(deleted.values()))
    await refresh_lanes(conn, touched, locked)
    # Lanes left without jobs are gone by now: a freed lane that remains has work behind.
    freed = await release_if_done(conn, touched, owner)
    return {job[3] for job in followups}, any(available_at <= now for available_at in freed)


async def _ready_lane(conn: Conn, job_id: int) -> tuple[str, set[str]] | None:
    """The lane of a ready job, locked; None if the job is not ready (any more)."""
    cursor = await conn.execute(
        "SELECT lane FROM jobs WHERE id = %s AND state = 'ready'", (job_id,)
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return row[0], await lock_lanes(conn, [row[0]])


async def remove_ready(conn: Conn, job_id: int, owner: str) -> bool:
    """Delete a ready job (its message is kept elsewhere, e.g. held); False if not ready."""
    found = await _ready_lane(conn, job_id)
    if found is None:
        return False
    lane, locked = found
    await conn.execute("DELETE FROM jobs WHERE id = %s AND state = 'ready'", (job_id,))
    await refresh_lanes(conn, [lane], locked)
    await release_if_done(conn, [lane], owner)
    return True


async def retry(
    conn: Conn,
    job_id: int,
    owner: str,
    available_at: float,
    error: str,
    possibly_sent_since: float | None,
) -> None:
    found = await _ready_lane(conn, job_id)
    if found is None:
        return
    lane, locked = found
    await conn.execute(
        "UPDATE jobs SET available_at = %s, last_error = %s, sending_since = %s"
        " WHERE id = %s AND state = 'ready'",
        (available_at, error, possibly_sent_since, job_id),
    )
    await refresh_lanes(conn, [lane], locked)
    # The rest of the claimed prefix must wait behind the retried job, so the lease ends.
    await conn.execute(
        f"UPDATE lanes SET {_FREE} WHERE lane = %s AND lease_owner = %s",  # noqa: S608
        (lane, owner),
    )


async def dead_letter(conn: Conn, job_id: int, owner: str, reason: str, now: float) -> None:
    found = await _ready_lane(conn, job_id)
    if found is None:
        return
    lane, locked = found
    await conn.execute(
        "UPDATE jobs SET state = 'dead', last_error = %s, dead_at = %s, sending_since = NULL"
        " WHERE id = %s AND state = 'ready'",
        (reason, now, job_id),
    )
    await refresh_lanes(conn, [lane], locked)
    await release_if_done(conn, [lane], owner)


async def replay(
    conn: Conn,
    job_ids: Sequence[int],
    lane: str | None,
    since: float | None,
    until: float | None,
    now: float,
) -> tuple[list[tuple[int, int]], set[str]]:
    """Returns (old id, new id) of each job replayed, and their destinations."""
    filters = ["state = 'dead'"]
    params: dict[str, Any] = {"now": now}
    for name, clause, value in (
        ("lane", "lane = %(lane)s", lane),
        ("since", "dead_at >= %(since)s", since),
        ("until", "dead_at <= %(until)s", until),
        ("ids", "id = ANY(%(ids)s::bigint[])", list(job_ids) or None),
    ):
        if value is not None:
            filters.append(clause)
            params[name] = value
    # A replayed job gets a new id at the tail of its lane: a worker may hold the lane's
    # lease right now, and its lease covers the ids it was handed, so an old id slipped
    # back in ahead of them would stall the lane until the lease expired. The new job
    # names the old one (`replay_of`), and the old one's history records the replay.
    columns = "kind, route, source, destination, lane, payload, created_at, last_error"
    cursor = await conn.execute(
        f"WITH gone AS (DELETE FROM jobs WHERE {' AND '.join(filters)}"  # noqa: S608
        f" RETURNING id, {columns}, attempts, sending_since, replay_of),"
        f" new AS (INSERT INTO jobs ({columns}, state, attempts, available_at, replay_of)"
        f" SELECT {columns}, 'ready', 0, %(now)s, id FROM gone ORDER BY id"
        " RETURNING id, replay_of, lane, destination),"
        " logged AS (INSERT INTO job_log (job_id, step, at, attempt, kind, route, source,"
        " destination, lane, created_at, started_at, detail, message, replay_of)"
        " SELECT g.id, 'replayed', %(now)s, g.attempts, g.kind, g.route, g.source,"
        " g.destination, g.lane, g.created_at, g.sending_since, new.id::text,"
        " convert_from(g.payload, 'UTF8')::jsonb #>> '{event,native_id}', g.replay_of"
        " FROM gone g JOIN new ON new.replay_of = g.id)"
        " SELECT replay_of, id, lane, destination FROM new ORDER BY id",
        params,
    )
    rows = await cursor.fetchall()
    lanes = sorted({row[2] for row in rows})
    locked = await lock_lanes(conn, lanes)
    await refresh_lanes(conn, lanes, locked)
    return [(row[0], row[1]) for row in rows], {row[3] for row in rows}


async def dead_letters(
    conn: Conn, limit: int, destination: str | None, lane: str | None
) -> list[Job]:
    query = f"SELECT {COLUMNS} FROM jobs WHERE state = 'dead'"  # noqa: S608 (constant)
    params: list[Any] = []
    if destination is not None:
        query += " AND destination = %s"
        params.append(destination)
    if lane is not None:
        query += " AND lane = %s"
        params.append(lane)
    cursor = await conn.execute(f"{query} ORDER BY dead_at, id LIMIT %s", (*params, limit))
    return [job_from_row(row) for row in await cursor.fetchall()]


async def get_job(conn: Conn, job_id: int) -> Job | None:
    cursor = await conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE id = %s",  # noqa: S608 (constant)
        (job_id,),
    )
    row = await cursor.fetchone()
    return None if row is None else job_from_row(row)


async def next_due(conn: Conn, destination: str) -> float | None:
    # A leased lane is due when its lease runs out (or earlier, when its owner lets go).
    cursor = await conn.execute(
        "SELECT MIN(GREATEST(available_at, COALESCE(lease_until, available_at)))"
        " FROM lanes WHERE destination = %s",
        (destination,),
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def destinations_with_work(conn: Conn) -> list[str]:
    cursor = await conn.execute("SELECT DISTINCT destination FROM lanes ORDER BY destination")
    return [str(row[0]) for row in await cursor.fetchall()]


async def sending(conn: Conn, destination: str, since: float) -> int:
    # `jobs_sending` holds exactly the jobs this counts (migration 0006).
    cursor = await conn.execute(
        "SELECT count(*) FROM jobs WHERE destination = %s AND state = 'ready'"
        " AND kind = 'send' AND sending_since >= %s",
        (destination, since),
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def stats(conn: Conn) -> list[DestinationStats]:
    cursor = await conn.execute(
        "SELECT destination, count(*) FILTER (WHERE state = 'ready'),"
        " count(*) FILTER (WHERE state = 'dead'),"
        " min(created_at) FILTER (WHERE state = 'ready')"
        " FROM jobs GROUP BY destination ORDER BY destination"
    )
    return [DestinationStats(r[0], r[1], r[2], r[3]) for r in await cursor.fetchall()]
