"""Job history in PostgreSQL: what became of each job, kept after it is gone (`job_log`).

The same model as `sqlite_history`: rows are copied from the job (INSERT ... SELECT) in the
transaction that records its outcome; the source message id is read from the payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.base import Activity, Job, JobStep, StoredEvent
from gateway.store.postgres_queue import COLUMNS, Conn
from gateway.store.rows import job_from_row

STEP_COLUMNS = (
    "job_id, step, at, attempt, kind, route, source, destination, lane, created_at,"
    " started_at, detail, message, replay_of"
)
#: The source message id in an orjson payload (bytea holding the pipeline's JSON).
MESSAGE = "convert_from({}.payload, 'UTF8')::jsonb #>> '{{event,native_id}}'"
_LOG = (
    f"INSERT INTO job_log ({STEP_COLUMNS})"  # noqa: S608 (constant columns)
    " SELECT id, %(step)s, %(now)s, attempts, kind, route, source, destination, lane,"
    f" created_at, sending_since, %(detail)s, {MESSAGE.format('jobs')}, replay_of"
    " FROM jobs WHERE id = ANY(%(ids)s::bigint[])"
)


async def log_steps(
    conn: Conn, job_ids: Sequence[int], step: str, now: float, detail: str | None = None
) -> None:
    """Record `step` of jobs still in `jobs` (call before changing or deleting them)."""
    params = {"step": step, "now": now, "detail": detail, "ids": list(job_ids)}
    await conn.execute(_LOG, params)


async def log_outcome(conn: Conn, job_id: int, step: str, now: float, detail: str) -> None:
    """Record a retry or a parking, of a job still ready (else it is not ours to record)."""
    params = {"step": step, "now": now, "detail": detail, "ids": [job_id]}
    await conn.execute(f"{_LOG} AND state = 'ready'", params)


async def job_history(
    conn: Conn,
    job_ids: Sequence[int],
    message: str | None,
    lane_part: str | None,
    limit: int,
) -> list[JobStep]:
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if job_ids:
        clauses.append("job_id = ANY(%(ids)s::bigint[])")
        params["ids"] = list(job_ids)
    if message:
        clauses.append("message = %(message)s")
        params["message"] = message
    if lane_part:
        clauses.append("strpos(lane, %(part)s) > 0")
        params["part"] = lane_part
    if not clauses:
        return []
    cursor = await conn.execute(
        f"SELECT {STEP_COLUMNS} FROM job_log WHERE {' OR '.join(clauses)}"  # noqa: S608
        " ORDER BY at, id LIMIT %(limit)s",
        params,
    )
    return [JobStep(*row) for row in await cursor.fetchall()]


async def find_jobs(conn: Conn, text: str, limit: int) -> list[Job]:
    cursor = await conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE strpos(lane, %(text)s) > 0"  # noqa: S608
        " OR strpos(convert_from(payload, 'UTF8'), %(text)s) > 0 ORDER BY id LIMIT %(limit)s",
        {"text": text, "limit": limit},
    )
    return [job_from_row(row) for row in await cursor.fetchall()]


async def find_events(conn: Conn, text: str, since: float, limit: int) -> list[StoredEvent]:
    cursor = await conn.execute(
        "SELECT id, instance, dedupe_key, received_at FROM events"
        " WHERE received_at >= %(since)s AND (strpos(dedupe_key, %(text)s) > 0"
        " OR strpos(convert_from(event, 'UTF8'), %(text)s) > 0)"
        " ORDER BY received_at, id LIMIT %(limit)s",
        {"since": since, "text": text, "limit": limit},
    )
    return [StoredEvent(*row) for row in await cursor.fetchall()]


async def activity(conn: Conn, since: float, width: float, count: int) -> list[Activity]:
    until = since + width * count
    received = await _per_bucket(
        conn, "SELECT received_at AS t FROM events", "received_at", since, until, width, count
    )
    delivered = await _per_bucket(
        conn,
        "SELECT at AS t FROM job_log WHERE step = 'delivered' AND",
        "at",
        since,
        until,
        width,
        count,
    )
    parked = await _per_bucket(
        conn,
        "SELECT at AS t FROM job_log WHERE step = 'parked' AND",
        "at",
        since,
        until,
        width,
        count,
    )
    ends = [since + width * (index + 1) for index in range(count)]
    # Waiting at each bucket's end: created by then, neither delivered nor parked by then.
    cursor = await conn.execute(
        "SELECT e, (SELECT count(*) FROM jobs WHERE created_at <= e"
        " AND (state = 'ready' OR dead_at > e))"
        " + (SELECT count(*) FROM job_log WHERE step = 'delivered' AND at > e"
        " AND created_at <= e) FROM unnest(%s::double precision[]) AS b(e) ORDER BY e",
        (ends,),
    )
    waiting = [int(row[1]) for row in await cursor.fetchall()]
    return [
        Activity(since + width * i, received[i], delivered[i], parked[i], waiting[i])
        for i in range(count)
    ]


async def _per_bucket(
    conn: Conn,
    select: str,
    column: str,
    since: float,
    until: float,
    width: float,
    count: int,
) -> list[int]:
    joiner = "" if select.endswith("AND") else " WHERE"
    cursor = await conn.execute(
        f"SELECT floor((t - %(since)s) / %(width)s)::int, count(*) FROM ({select}{joiner}"  # noqa: S608
        f" {column} >= %(since)s AND {column} < %(until)s) AS x GROUP BY 1",
        {"since": since, "until": until, "width": width},
    )
    counts = [0] * count
    for index, found in await cursor.fetchall():
        if 0 <= index < count:
            counts[index] = int(found)
    return counts
