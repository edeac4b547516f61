"""Job history in SQLite: what became of each job, kept after it is gone (`job_log`).

Rows are copied from the job itself (INSERT ... SELECT) in the transaction that records
its outcome; the source message id comes out of the payload with SQLite's JSON functions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.store.base import Activity, Job, JobStep, StoredEvent
from gateway.store.rows import job_from_row

_STEP_COLUMNS = (
    "job_id, step, at, attempt, kind, route, source, destination, lane, created_at,"
    " started_at, detail, message, replay_of"
)
# The payload is orjson bytes in a BLOB: read as text, it is the JSON the pipeline wrote.
_LOG = (
    f"INSERT INTO job_log ({_STEP_COLUMNS})"  # noqa: S608 (constant columns)
    " SELECT id, ?, ?, attempts, kind, route, source, destination, lane, created_at,"
    " sending_since, ?, json_extract(CAST(payload AS TEXT), '$.event.native_id'), replay_of"
    " FROM jobs WHERE id = ?"
)
# One statement for a batch, the ids as one JSON array (a constant text, so it stays in
# the statement cache whatever the batch's size); the log keeps the array's order.
_LOG_MANY = (
    f"INSERT INTO job_log ({_STEP_COLUMNS})"  # noqa: S608 (constant columns)
    " SELECT jobs.id, ?, ?, attempts, kind, route, source, destination, lane, created_at,"
    " sending_since, ?, json_extract(CAST(payload AS TEXT), '$.event.native_id'), replay_of"
    " FROM json_each(?) AS batch JOIN jobs ON jobs.id = batch.value ORDER BY batch.key"
)
_JOB_COLUMNS = (
    "id, kind, route, source, destination, lane, payload, state, attempts,"
    " created_at, available_at, last_error, sending_since, dead_at, replay_of"
)


def log_step(
    connection: sqlite3.Connection, job_id: int, step: str, now: float, detail: str | None
) -> None:
    """Record `step` of a job that is still in `jobs` (call before changing or deleting it)."""
    connection.execute(_LOG, (step, now, detail, job_id))


def log_steps(
    connection: sqlite3.Connection, job_ids: bytes, step: str, now: float, detail: str | None
) -> None:
    """`log_step` for the jobs whose ids `job_ids` lists (a JSON array), in that order."""
    connection.execute(_LOG_MANY, (step, now, detail, job_ids))


def log_outcome(
    connection: sqlite3.Connection, job_id: int, step: str, now: float, detail: str
) -> None:
    """Record a retry or a parking, of a job still ready (else it is not ours to record)."""
    connection.execute(f"{_LOG} AND state = 'ready'", (step, now, detail, job_id))


def job_history(
    connection: sqlite3.Connection,
    job_ids: Sequence[int],
    message: str | None,
    lane_part: str | None,
    limit: int,
) -> list[JobStep]:
    clauses: list[str] = []
    params: list[Any] = []
    if job_ids:
        clauses.append(f"job_id IN ({', '.join('?' * len(job_ids))})")
        params.extend(job_ids)
    if message:
        clauses.append("message = ?")
        params.append(message)
    if lane_part:
        clauses.append("instr(lane, ?) > 0")
        params.append(lane_part)
    if not clauses:
        return []
    rows = connection.execute(
        f"SELECT {_STEP_COLUMNS} FROM job_log WHERE {' OR '.join(clauses)}"  # noqa: S608
        " ORDER BY at, id LIMIT ?",
        (*params, limit),
    )
    return [JobStep(*row) for row in rows]


def find_jobs(connection: sqlite3.Connection, text: str, limit: int) -> list[Job]:
    rows = connection.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs"  # noqa: S608 (constant columns)
        " WHERE instr(lane, ?) > 0 OR instr(CAST(payload AS TEXT), ?) > 0 ORDER BY id LIMIT ?",
        (text, text, limit),
    )
    return [job_from_row(row) for row in rows]


def find_events(
    connection: sqlite3.Connection, text: str, since: float, limit: int
) -> list[StoredEvent]:
    rows = connection.execute(
        "SELECT id, instance, dedupe_key, received_at FROM events WHERE received_at >= ?"
        " AND (instr(dedupe_key, ?) > 0 OR instr(CAST(event AS TEXT), ?) > 0)"
        " ORDER BY received_at, id LIMIT ?",
        (since, text, text, limit),
    )
    return [StoredEvent(*row) for row in rows]


def activity(
    connection: sqlite3.Connection, since: float, width: float, count: int
) -> list[Activity]:
    until = since + width * count
    received = _per_bucket(
        connection,
        "SELECT received_at AS t FROM events WHERE received_at >= ? AND received_at < ?",
        since,
        until,
        width,
        count,
    )
    delivered = _per_bucket(
        connection,
        "SELECT at AS t FROM job_log WHERE step = 'delivered' AND at >= ? AND at < ?",
        since,
        until,
        width,
        count,
    )
    parked = _per_bucket(
        connection,
        "SELECT at AS t FROM job_log WHERE step = 'parked' AND at >= ? AND at < ?",
        since,
        until,
        width,
        count,
    )
    buckets = []
    for index in range(count):
        end = since + width * (index + 1)
        # Waiting at `end`: created by then and neither delivered nor parked by then.
        (waiting,) = connection.execute(
            "SELECT (SELECT count(*) FROM jobs WHERE created_at <= ?1"
            " AND (state = 'ready' OR dead_at > ?1))"
            " + (SELECT count(*) FROM job_log WHERE step = 'delivered' AND at > ?1"
            " AND created_at <= ?1)",
            (end,),
        ).fetchone()
        start = since + width * index
        buckets.append(
            Activity(start, received[index], delivered[index], parked[index], int(waiting))
        )
    return buckets


def _per_bucket(
    connection: sqlite3.Connection,
    select_times: str,
    since: float,
    until: float,
    width: float,
    count: int,
) -> list[int]:
    counts = [0] * count
    rows = connection.execute(
        f"SELECT CAST((t - ?) / ? AS INTEGER), count(*) FROM ({select_times})"  # noqa: S608
        " GROUP BY 1",
        (since, width, since, until),
    )
    for index, found in rows:
        if 0 <= index < count:
            counts[index] = found
    return counts
