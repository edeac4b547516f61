"""Decoding rows shared by the SQL backends, which select job columns in table order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.store.base import Job, NewJob


def job_from_row(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        kind=row[1],
        route=row[2],
        source=row[3],
        destination=row[4],
        lane=row[5],
        payload=orjson.loads(row[6]),
        state=row[7],
        attempts=row[8],
        created_at=row[9],
        available_at=row[10],
        last_error=row[11],
        sending_since=row[12],
        dead_at=row[13],
        replay_of=row[14] if len(row) > 14 else None,
    )


def sort_time(job: NewJob) -> float | None:
    """The provider's timestamp of a message the job sends (None for any other job): the
    store places a message that arrives after newer waiting ones of its lane ahead of them."""
    payload = job.payload
    event = payload.get("event") if job.kind == "send" and isinstance(payload, dict) else None
    if not isinstance(event, dict) or event.get("kind") != "message":
        return None
    timestamp = event.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    return float(timestamp)
