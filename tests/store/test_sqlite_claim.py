"""How the SQLite store reads a claim's jobs: one statement for many lanes, one cursor a
lane otherwise, and the same jobs either way."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import sqlite_queue as queue
from gateway.store.sqlite_schema import connect

NOW = 1_000.0


@contextmanager
def database() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory() as folder:
        connection = connect(str(Path(folder) / "gateway.db"))
        try:
            yield connection
        finally:
            connection.close()


def enqueue(connection: sqlite3.Connection, jobs: Sequence[tuple[int, float | None]]) -> None:
    """Jobs as (lane number, provider timestamp): a timestamp older than waiting jobs of
    its lane places the job ahead of them, so keys are not only ids."""
    for lane, sort_time in jobs:
        row = ("send", "r", "wa", "crm", f"lane-{lane:03}", b'{"event": {}}', sort_time)
        queue.insert_jobs(connection, [row], NOW)


def due_lanes(connection: sqlite3.Connection, limit: int) -> list[Any]:
    return connection.execute(queue._DUE_LANES, ("crm", NOW, NOW, limit)).fetchall()


def reference(connection: sqlite3.Connection, lanes: Sequence[Any], limit: int) -> list[Any]:
    return queue.merged_prefixes(connection, [lane for lane, _ in lanes], limit)


def claim_counted(
    connection: sqlite3.Connection, lanes: Sequence[Any], limit: int
) -> tuple[int, list[Any]]:
    """`claim_rows`, with how many statements it made that read `jobs`."""
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        rows = queue.claim_rows(connection, lanes, limit)
    finally:
        connection.set_trace_callback(None)
    reads = sum(1 for sql in statements if sql.lstrip().startswith("SELECT") and "jobs" in sql)
    return reads, rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(
        st.tuples(
            st.integers(0, 24),
            st.one_of(st.none(), st.floats(0, 100, allow_nan=False, allow_infinity=False)),
        ),
        max_size=120,
    ),
    not_due=st.sets(st.integers(0, 24), max_size=5),
    limit=st.integers(1, 40),
)
def test_one_statement_hands_out_what_one_cursor_a_lane_does(
    jobs: list[tuple[int, float | None]], not_due: set[int], limit: int
) -> None:
    with database() as connection, pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue, "FEW_LANES", 0)
        enqueue(connection, jobs)
        connection.executemany(
            "UPDATE lanes SET available_at = ? WHERE lane = ?",
            [(NOW + 60, f"lane-{lane:03}") for lane in not_due],
        )
        lanes = due_lanes(connection, limit)
        assert queue.claim_rows(connection, lanes, limit) == reference(connection, lanes, limit)


def test_a_round_of_many_lanes_is_read_in_one_statement() -> None:
    with database() as connection:
        enqueue(connection, [(lane, None) for _ in range(3) for lane in range(60)])
        lanes = due_lanes(connection, 50)
        reads, rows = claim_counted(connection, lanes, 50)
        assert reads == 2  # the count and the rows
        assert rows == reference(connection, lanes, 50)
        assert [row[0] for row in rows] == list(range(1, 51))  # the first round, lane by lane


def test_a_deep_lane_below_the_bound_is_read_one_cursor_a_lane() -> None:
    with database() as connection:
        # lane 0 holds 200 jobs older than every other lane's only job
        enqueue(connection, [(0, None)] * 200 + [(lane, None) for lane in range(1, 60)])
        lanes = due_lanes(connection, 50)
        reads, rows = claim_counted(connection, lanes, 50)
        assert reads == 1 + len(lanes)  # the count said too many, then a cursor a lane
        assert [row[0] for row in rows] == list(range(1, 51))
        assert {row[5] for row in rows} == {"lane-000"}


def test_a_few_lanes_are_read_one_cursor_a_lane() -> None:
    with database() as connection:
        enqueue(connection, [(lane, None) for _ in range(10) for lane in range(queue.FEW_LANES)])
        lanes = due_lanes(connection, 50)
        reads, rows = claim_counted(connection, lanes, 50)
        assert reads == queue.FEW_LANES
        assert [row[0] for row in rows] == list(range(1, 51))


def test_equal_keys_in_two_lanes_go_in_lane_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "FEW_LANES", 0)
    with database() as connection:
        # job 4 is older than job 3 of its lane, so it goes between jobs 1 and 3: key 2.0,
        # the key of job 2 in the other lane, whose head (2) comes after this lane's (1)
        enqueue(connection, [(1, 10.0), (0, None), (1, 30.0), (1, 20.0)])
        lanes = due_lanes(connection, 10)
        assert [lane for lane, _ in lanes] == ["lane-001", "lane-000"]
        rows = queue.claim_rows(connection, lanes, 10)
        assert rows == reference(connection, lanes, 10)
        assert [row[0] for row in rows] == [1, 4, 2, 3]
