"""Decoding rows shared by the SQL backends, which select job columns in table order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.store.base import Job


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
