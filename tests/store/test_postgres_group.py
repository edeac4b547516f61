"""Group commit on PostgreSQL: a loop turn's ingests are one transaction (their rows share
one transaction id, `xmin`), a caller whose rows fail fails alone, lane rows stay exactly
the lanes with ready jobs, and processes ingesting into the same lanes while others
finish and place late messages there wait for each other instead of deadlocking.

Needs a server: GATEWAY_TEST_POSTGRES_URL (CI sets it); skipped without one, except in CI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from gateway.errors import StoreError
from gateway.store import open_store
from gateway.store.base import Finished, IngestItem, Store
from gateway.store.contract import LEASE, NOW, item, job
from gateway.store.contract_order import message
from gateway.testing.postgres import postgres_schema

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    store = open_store(pg_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, as two gateway processes have."""
    one, two = open_store(pg_url), open_store(pg_url)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql)  # type: ignore[arg-type]
        return await cursor.fetchall()


async def lane_rows_match_ready_jobs(url: str) -> None:
    """A lane row exists exactly while its lane has ready jobs, headed by the first."""
    rows = await query(url, "SELECT lane, head FROM lanes ORDER BY lane")
    heads = await query(
        url,
        "SELECT lane, min(COALESCE(position, id)) FROM jobs WHERE state = 'ready'"
        " GROUP BY lane ORDER BY lane",
    )
    assert rows == [(lane, float(head)) for lane, head in heads]


def batches(store: Store) -> int:
    return int(store._ingests.batches)  # type: ignore[attr-defined]


async def test_a_loop_turns_ingests_are_one_transaction(store: Store, pg_url: str) -> None:
    await store.ingest([item("before", job("lane-0", 0))], NOW)
    before = batches(store)
    calls = [store.ingest([item(f"k{n}", job(f"lane-{n % 5}", n))], NOW + n) for n in range(20)]
    results = await asyncio.gather(*calls)
    assert batches(store) - before == 1
    ids = [r for [r] in results]
    assert None not in ids and ids == sorted(ids)  # ids in arrival order
    [(transactions,)] = await query(
        pg_url, "SELECT count(DISTINCT xmin::text) FROM events WHERE dedupe_key <> 'before'"
    )
    [(job_transactions,)] = await query(pg_url, "SELECT count(DISTINCT xmin::text) FROM jobs")
    assert transactions == 1 and job_transactions == 2
    # Each caller keeps its own time.
    received = await query(pg_url, "SELECT dedupe_key, received_at FROM events ORDER BY id")
    assert received[1:] == [(f"k{n}", NOW + n) for n in range(20)]
    await lane_rows_match_ready_jobs(pg_url)


async def test_a_bad_caller_fails_alone_and_leaves_no_lane_behind(
    store: Store, pg_url: str
) -> None:
    await store.ingest([item("seen", job("lane-a", 0))], NOW)
    broken = job("lane-broken", kind="bogus")  # type: ignore[arg-type]
    held = IngestItem("wa-1", "held", {}, [job("lane-held")], hold=True, conversation="chat-9")
    first, failed, duplicate, parked, last = await asyncio.gather(
        store.ingest([item("k1", job("lane-a", 1))], NOW),
        store.ingest([item("k2", broken)], NOW),
        store.ingest([item("seen", job("lane-dup", 0))], NOW),
        store.ingest([held], NOW),
        store.ingest([item("k3", job("lane-c", 3))], NOW),
        return_exceptions=True,
    )
    assert isinstance(failed, StoreError)
    assert isinstance(first, list) and first[0] is not None
    assert duplicate == [None]
    assert isinstance(parked, list) and parked[0] is not None
    assert isinstance(last, list) and last[0] is not None
    # Delivered again, the failed caller's event is new: nothing of it was stored.
    assert (await store.ingest([item("k2", job("lane-b", 2))], NOW))[0] is not None
    # No lane for the failed, duplicate or held callers' jobs.
    assert await query(pg_url, "SELECT lane FROM lanes ORDER BY lane") == [
        ("lane-a",),
        ("lane-b",),
        ("lane-c",),
    ]
    await lane_rows_match_ready_jobs(pg_url)


async def test_processes_ingesting_into_the_same_lanes_do_not_deadlock(
    pair: tuple[Store, Store], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.store")
    one, two = pair
    lanes = [f"chat-{n}" for n in range(8)]
    sent = 0

    async def burst(store: Store, order: list[str], tag: str, turn: int) -> None:
        # One group: a webhook per lane; each message older than those waiting, so every
        # one of them is placed ahead (`place_late`, which locks its lanes again).
        await asyncio.gather(
            *(
                store.ingest(
                    [item(f"{tag}{turn}-{lane}", message(f"{tag}{turn}", -turn, lane))], NOW
                )
                for lane in order
            )
        )

    async def deliver(store: Store, owner: str, followups: list[str]) -> None:
        nonlocal sent
        jobs = await store.claim("crm", owner, 20, LEASE, NOW)
        done = [Finished(j.id, followups=[job(lane, j.id)]) for j, lane in zip(jobs, followups)]
        await store.finish(done, owner, NOW)
        sent += len(done)

    for turn in range(40):
        await asyncio.gather(
            burst(one, lanes, "a", turn),
            burst(two, lanes[::-1], "b", turn),
            deliver(one, "p1", lanes[::-1]),
            deliver(two, "p2", lanes),
        )
    assert sent > 0
    assert [r.getMessage() for r in caplog.records if "deadlock" in r.getMessage()] == []
    await lane_rows_match_ready_jobs(pg_url)
