"""Group commit: ingests made within one turn of the event loop share one backend call and
one commit, dedupe as they would one after the other, and fail alone or together exactly
as their data was stored or not. Both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.contract import LEASE, NOW, item, job
from gateway.store.contract_order import message, names
from gateway.store.postgres_ingest import GroupedIngest
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite_thread import Writer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    from gateway.testing.postgres import postgres_schema

    with postgres_schema() as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = open_store(store_url)
    await store.open()
    yield store
    await store.close()


def batches(store: Store) -> int:
    group: Any = store._ingests  # type: ignore[attr-defined]
    assert isinstance(group, GroupedIngest) or hasattr(group, "batches")
    return int(group.batches)


def commits(store: Store) -> int | None:
    """Transactions the SQLite writer committed (None on PostgreSQL)."""
    if isinstance(store, SQLiteStore):
        writer = store._writer
        assert isinstance(writer, Writer)
        return writer.commits
    return None


async def test_ingests_of_one_loop_turn_share_one_batch_and_one_commit(store: Store) -> None:
    before, committed = batches(store), commits(store)
    calls = [store.ingest([item(f"k{n}", job(f"lane-{n % 3}", n))], NOW) for n in range(20)]
    results = await asyncio.gather(*calls)
    assert batches(store) - before == 1
    if committed is not None:
        assert commits(store) == committed + 1
    ids = [r for [r] in results]
    assert None not in ids and len(set(ids)) == 20
    [stats] = await store.stats(NOW)
    assert stats.ready == 20


async def test_dedupe_holds_within_a_group(store: Store) -> None:
    before = batches(store)
    first, again, other, both = await asyncio.gather(
        store.ingest([item("k1", job("a", 1))], NOW),
        store.ingest([item("k1", job("a", 1))], NOW),
        store.ingest([item("k2", job("a", 2))], NOW),
        store.ingest([item("k3", job("b", 3)), item("k1", job("a", 1))], NOW),
    )
    assert batches(store) - before == 1
    assert first[0] is not None and again == [None] and other[0] is not None
    assert both[0] is not None and both[1] is None
    [stats] = await store.stats(NOW)
    assert stats.ready == 3  # k1, k2, k3: one job each, the repeats none


async def test_a_late_message_goes_ahead_of_a_newer_one_of_its_group(store: Store) -> None:
    await store.ingest([item("k4", message("m4", 40, lane="chat-2"))], NOW)
    before = batches(store)
    await asyncio.gather(
        store.ingest([item("k3", message("m3", 30))], NOW + 1),
        store.ingest([item("k1", message("m1", 10))], NOW + 1),  # redelivered late
        store.ingest(
            [item("k2", message("m2", 20)), item("k0", message("m0", 5, "chat-2"))], NOW + 1
        ),
    )
    assert batches(store) - before == 1
    claimed = await store.claim("crm", "w1", 10, LEASE, NOW + 2)
    assert names([j for j in claimed if j.lane == "chat-1"]) == ["m1", "m2", "m3"]
    assert names([j for j in claimed if j.lane == "chat-2"]) == ["m0", "m4"]


async def test_a_failing_caller_fails_alone_in_its_group(store: Store) -> None:
    broken = job("b", kind="bogus")  # type: ignore[arg-type]
    first, failed, third = await asyncio.gather(
        store.ingest([item("k1", job("a", 1))], NOW),
        store.ingest([item("k2", broken)], NOW),
        store.ingest([item("k3", job("a", 3))], NOW),
        return_exceptions=True,
    )
    assert isinstance(failed, StoreError)
    assert isinstance(first, list) and first[0] is not None
    assert isinstance(third, list) and third[0] is not None
    # Nothing of the failed caller is stored: delivered again, it is new.
    [again] = await store.ingest([item("k2", job("b", 2))], NOW)
    assert again is not None


async def test_a_failed_group_fails_every_caller_and_stores_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse = True
    if isinstance(store, SQLiteStore):
        import sqlite3

        from gateway.store import sqlite_queue as queue

        def failing(*args: Any) -> Any:
            if refuse:
                raise sqlite3.OperationalError("disk I/O error")
            return real(*args)
    else:
        import psycopg

        from gateway.store import postgres_queue as queue  # type: ignore[no-redef]

        async def failing(*args: Any) -> Any:  # type: ignore[misc]
            if refuse:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return await real(*args)

    real: Any = queue.ingest
    monkeypatch.setattr(queue, "ingest", failing)
    results = await asyncio.gather(
        *(store.ingest([item(f"k{n}", job("a", n))], NOW) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    refuse = False
    # Redelivered, every one of them is new: nothing was half-stored.
    redelivered = await asyncio.gather(
        *(store.ingest([item(f"k{n}", job("a", n))], NOW) for n in range(5))
    )
    assert all(r[0] is not None for r in redelivered)
    [stats] = await store.stats(NOW)
    assert stats.ready == 5


async def test_an_operation_alone_in_its_transaction_fails_alone(tmp_path: Path) -> None:
    """A lone operation runs without a savepoint: its failure rolls back its transaction,
    fails its caller only, and the writer goes on."""
    import sqlite3

    store = SQLiteStore(str(tmp_path / "gateway.db"))
    await store.open()
    try:
        writer = store._writer
        assert isinstance(writer, Writer)

        def half_then_fail(connection: sqlite3.Connection) -> None:
            connection.execute("INSERT INTO kv (namespace, key, value) VALUES ('t', 'k', x'00')")
            raise sqlite3.IntegrityError("refused")

        with pytest.raises(StoreError, match="refused"):
            await writer.submit_async(half_then_fail)
        assert await store.kv_get("t", "k") is None  # nothing of it was committed
        await store.kv_put("t", "k", {"after": True})
        assert await store.kv_get("t", "k") == {"after": True}
    finally:
        await store.close()
