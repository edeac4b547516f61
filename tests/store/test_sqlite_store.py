"""The SQLite store: the shared contract on a file, plus what only SQLite has."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from gateway.errors import MigrationError, StoreError
from gateway.store import open_store, sqlite_thread
from gateway.store import sqlite as sqlite_store_module
from gateway.store.base import NewJob
from gateway.store.contract import LEASE, NOW, StoreContract, item, job
from gateway.store.migrations import Migration, latest_version, load_migrations
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite_locks import WriterLock
from gateway.store.sqlite_queue import SENDING
from gateway.store.sqlite_schema import connect, migrate
from gateway.store.sqlite_thread import Writer


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "gateway.db"))
    await store.open()
    yield store
    await store.close()


def writer_of(store: SQLiteStore) -> Writer:
    assert store._writer is not None
    return store._writer


async def hold_writer(store: SQLiteStore) -> tuple[threading.Event, asyncio.Task[object]]:
    """Park the writer thread inside an operation, so calls queue up behind it."""
    entered, gate = threading.Event(), threading.Event()

    def blocker(connection: sqlite3.Connection) -> None:
        entered.set()
        gate.wait(10)

    task = asyncio.ensure_future(store._run(blocker))
    await anyio.to_thread.run_sync(entered.wait)
    return gate, task


# schema and durability -------------------------------------------------------------------
@pytest.mark.anyio
async def test_runs_in_wal_mode_and_its_writer_syncs_the_wal_itself(store: SQLiteStore) -> None:
    # NORMAL on the writer's connection only because it fdatasyncs the WAL after each
    # commit (see the next tests); a connection opened by `connect` alone keeps FULL.
    sync = await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert sync == 1  # NORMAL
    with contextlib.closing(connect(store.path)) as tool:
        assert tool.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.anyio
async def test_a_commit_is_synced_after_the_write_lock_is_freed_and_before_it_is_answered(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = False
    seen: list[tuple[str, bool, bool]] = []  # (file synced, write lock free, answered yet)
    real_sync = os.fdatasync

    def observed_sync(fd: int) -> None:
        probe = os.open(f"{store.path}.writer", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other process could write
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), free, answered))
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", observed_sync)
    await store.ingest([item("k1", job("a"))], NOW)
    answered = True
    # A transaction that wrote nothing is synced too: what it read (here, that "k1" is a
    # duplicate) may be another process's commit whose sync is still under way.
    assert await store.ingest([item("k1", job("a"))], NOW) == [None]
    assert seen == [(f"{store.path}-wal", True, False), (f"{store.path}-wal", True, True)]


@pytest.mark.anyio
async def test_the_writer_checkpoints_the_wal_itself(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own checkpoint would run inside a COMMIT, with the file's write lock held.
    auto = await store._run(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    assert auto == 0
    monkeypatch.setattr(sqlite_thread, "CHECKPOINT_CHANGES", 40)
    for n in range(300):  # 300 commits of 10 rows: about 14 MB of WAL unchecked
        await store.ingest([item(f"k{n}-{i}", job(f"lane-{i}")) for i in range(5)], NOW)
    # Checkpointed every few commits, the WAL is reused from its start instead of growing.
    assert (await anyio.Path(f"{store.path}-wal").stat()).st_size < 1_000_000


@pytest.mark.anyio
async def test_a_checkpoint_copies_most_of_the_wal_with_the_write_lock_free(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Then, holding the lock, the frames the other process wrote meanwhile: a checkpoint
    # overlapped by writes does not complete, and the WAL would never be reused (it grew
    # to 276 MB in 6 s of load without this second step).
    monkeypatch.setattr(sqlite_thread, "CHECKPOINT_CHANGES", 1)
    writer = writer_of(store)
    steps: list[str] = []

    class RecordedLock:
        def __init__(self, lock: WriterLock) -> None:
            self.lock = lock

        def acquire(self) -> None:
            self.lock.acquire()
            steps.append("lock")

        def release(self) -> None:
            steps.append("unlock")
            self.lock.release()

        def close(self) -> None:
            self.lock.close()

    assert writer._lock is not None
    monkeypatch.setattr(writer, "_lock", RecordedLock(writer._lock))
    await store._run(lambda c: c.set_trace_callback(steps.append))
    await store.ingest([item("k1", job("a"))], NOW)
    await store._run(lambda c: c.set_trace_callback(None))
    checkpoint = "PRAGMA wal_checkpoint(PASSIVE)"
    # The ingest's own commit: the call that installed the trace commits too, before it.
    ingest = next(n for n, step in enumerate(steps) if step.startswith("INSERT INTO events"))
    after_commit = steps[steps.index("COMMIT", ingest) :][:6]
    assert after_commit == ["COMMIT", "unlock", checkpoint, "lock", checkpoint, "unlock"]


@pytest.mark.anyio
async def test_a_failed_sync_fails_its_callers_and_stops_the_store(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing_sync)
    with pytest.raises(StoreError, match=r"could not be written to disk .*Input/output error"):
        await store.ingest([item("k1", job("a"))], NOW)
    # After a write-back error nothing committed later could be trusted to be on disk.
    with pytest.raises(StoreError, match="could not be written to disk"):
        await store.claim("crm", "w1", 10, LEASE, NOW)
    assert any(
        r.levelname == "CRITICAL" and "restart the gateway" in r.getMessage()
        for r in caplog.records
    )
    await store.close()  # closes cleanly; the fixture's close is then a no-op


@pytest.mark.anyio
async def test_records_each_applied_migration(store: SQLiteStore) -> None:
    rows = await store._run(
        lambda c: c.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    )
    assert rows == [(m.version, m.name) for m in load_migrations("sqlite")]
    assert await store.schema_version() == latest_version("sqlite") == len(rows)


@pytest.mark.anyio
async def test_counting_sends_in_flight_reads_only_those(store: SQLiteStore) -> None:
    # Asked again and again while a Chat API echo waits: it must not read the whole queue.
    plan = await store._run(
        lambda c: c.execute(f"EXPLAIN QUERY PLAN {SENDING}", ("wa", NOW)).fetchall()
    )
    assert "USING INDEX jobs_sending" in " ".join(str(row[-1]) for row in plan)


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(store: SQLiteStore) -> None:
    await store.close()
    newer = latest_version("sqlite") + 1
    with sqlite3.connect(store.path) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (?, 'future', 0)", (newer,))
    again = SQLiteStore(store.path)
    with pytest.raises(MigrationError) as refused:
        await again.open()
    assert str(newer) in str(refused.value) and str(latest_version("sqlite")) in str(refused.value)
    with pytest.raises(StoreError):
        await again.ping()


def test_a_failing_migration_leaves_nothing_behind() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    good = Migration(1, "first", "CREATE TABLE t (a INTEGER);\n")
    bad = Migration(2, "broken", "CREATE TABLE u (a INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    assert migrate(connection, [good]) == 1
    with pytest.raises(MigrationError, match="0002_broken"):
        migrate(connection, [good, bad])
    tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert "u" not in tables and "t" in tables
    assert connection.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (1,)


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations("sqlite")]
    assert versions == list(range(1, len(versions) + 1))


# URLs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/gateway.db", "data/gateway.db"),
        ("sqlite:////var/lib/gateway.db", "/var/lib/gateway.db"),
        ("sqlite://:memory:", ":memory:"),
        ("SQLite:///x.db", "x.db"),
    ],
)
def test_open_store_picks_sqlite_by_url(url: str, path: str) -> None:
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == path and store.url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/gw", r"'mysql'.*sqlite:///.*postgresql://"),
        ("gateway.db", "no scheme"),
        ("sqlite://host/gateway.db", "three slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?mode=ro", "no query"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


@pytest.mark.anyio
async def test_a_relative_path_gets_its_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///state/nested/gateway.db")
    await store.open()
    await store.close()
    assert (tmp_path / "state" / "nested" / "gateway.db").is_file()


@pytest.mark.anyio
async def test_an_in_memory_store_works_while_open() -> None:
    store = open_store("sqlite://:memory:")
    await store.open()
    try:
        await store.ingest([item("k1", job("a"))], NOW)
        assert len(await store.claim("crm", "w1", 10, LEASE, NOW)) == 1
    finally:
        await store.close()


# the writer thread -----------------------------------------------------------------------
@pytest.mark.anyio
async def test_many_simultaneous_ingests(store: SQLiteStore) -> None:
    calls = [store.ingest([item(f"k{n % 150}", job(f"lane-{n % 7}", n))], NOW) for n in range(300)]
    results = [r for [r] in await asyncio.gather(*calls)]
    new = [r for r in results if r is not None]
    assert len(new) == len(set(new)) == 150
    [stats] = await store.stats(NOW)
    assert stats.ready == 150


@pytest.mark.anyio
async def test_queued_calls_share_one_commit(store: SQLiteStore) -> None:
    gate, blocker = await hold_writer(store)
    before = writer_of(store).commits
    calls = [asyncio.ensure_future(store.ingest([item(f"k{n}", job("a"))], NOW)) for n in range(50)]
    await anyio.lowlevel.checkpoint()  # every call has queued its operation
    gate.set()
    results = await asyncio.gather(*calls)
    await blocker
    assert writer_of(store).commits - before == 2  # the blocker's batch, then all 50 at once
    assert len({r for [r] in results}) == 50


@pytest.mark.anyio
async def test_a_failing_call_fails_alone_in_its_batch(store: SQLiteStore) -> None:
    broken = job("b", kind="bogus")  # type: ignore[arg-type]
    gate, blocker = await hold_writer(store)
    before = writer_of(store).commits
    calls = [
        asyncio.ensure_future(store.ingest([item("k1", job("a", 1))], NOW)),
        asyncio.ensure_future(store.ingest([item("k2", broken)], NOW)),
        asyncio.ensure_future(store.ingest([item("k3", job("a", 3))], NOW)),
    ]
    await anyio.lowlevel.checkpoint()
    gate.set()
    first, failed, third = await asyncio.gather(*calls, return_exceptions=True)
    await blocker
    assert writer_of(store).commits - before == 2
    assert isinstance(failed, StoreError) and "CHECK" in str(failed)
    assert first != [None] and third != [None]
    claimed = await store.claim("crm", "w1", 10, LEASE, NOW)
    assert [j.payload["n"] for j in claimed] == [1, 3]


def _temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (unlinked at once: `etilqs_*`)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if "etilqs_" in (target := os.readlink(fd)):
                found.append(target)
    return found


@pytest.mark.anyio
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_a_shared_commit_writes_no_temporary_file(store: SQLiteStore) -> None:
    # Each call in a shared commit has its savepoint, whose journal of the pages it
    # touches went into a new file in the temporary directory past 64 KiB: a store page
    # image outside the store's directory, and a dependency on a writable /var/tmp.
    def fill(connection: sqlite3.Connection) -> None:
        connection.executemany(
            "INSERT INTO kv (namespace, key, value) VALUES ('filler', ?, ?)",
            [(f"k{n}", bytes(2000)) for n in range(200)],
        )

    def write_many(connection: sqlite3.Connection) -> list[str]:
        # Pages that were in the file before the savepoint are the ones it journals.
        connection.execute("UPDATE kv SET value = ? WHERE namespace = 'filler'", (bytes(1),))
        return _temporary_files()

    await store._run(fill)
    gate, blocker = await hold_writer(store)
    calls = [asyncio.ensure_future(store._run(write_many)), asyncio.ensure_future(store.ping())]
    await anyio.lowlevel.checkpoint()
    gate.set()
    opened, _ = await asyncio.gather(*calls)
    await blocker
    assert opened == []


@pytest.mark.anyio
async def test_a_large_prune_goes_in_bounded_transactions(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One transaction for a store's first prune held the write lock for seconds and, in a
    # shared commit, kept a copy of every page it deleted from in memory.
    monkeypatch.setattr(sqlite_store_module, "PRUNE_CHUNK", 3)
    await store.ingest([item(f"k{n}") for n in range(10)], NOW)
    before = writer_of(store).commits
    assert await store.prune_events(NOW + 1) == 10
    assert writer_of(store).commits - before == 4  # 3 + 3 + 3, then the last one
    assert await store.prune_events(NOW + 1) == 0


@pytest.mark.anyio
async def test_a_call_cancelled_before_its_turn_never_runs(store: SQLiteStore) -> None:
    gate, blocker = await hold_writer(store)
    call = asyncio.ensure_future(store.ingest([item("k1", job("a"))], NOW))
    await anyio.lowlevel.checkpoint()
    call.cancel()
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()  # lets the cancellation reach the thread's future
    gate.set()
    await blocker
    assert call.cancelled()
    assert await store.ingest([item("k1", job("a"))], NOW) != [None]


@pytest.mark.anyio
async def test_close_finishes_queued_work_first(store: SQLiteStore) -> None:
    calls = [asyncio.ensure_future(store.ingest([item(f"k{n}")], NOW)) for n in range(20)]
    await anyio.lowlevel.checkpoint()
    await store.close()
    assert all(r != [None] for r in await asyncio.gather(*calls))
    with pytest.raises(StoreError, match="not open"):
        await store.ping()
    reopened = SQLiteStore(store.path)
    await reopened.open()
    try:
        assert await reopened.ingest([item(f"k{n}") for n in range(20)], NOW) == [None] * 20
    finally:
        await reopened.close()


def test_one_store_serves_several_event_loops(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/gateway.db")
    asyncio.run(store.open())
    asyncio.run(store.ingest([item("k1", job("a"))], NOW))
    assert len(asyncio.run(store.claim("crm", "w1", 10, LEASE, NOW))) == 1
    asyncio.run(store.close())


@pytest.mark.anyio
async def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the directory"):
        await SQLiteStore(str(tmp_path / "file" / "gateway.db")).open()
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        await SQLiteStore(str(tmp_path / "garbage.db")).open()


@pytest.mark.anyio
async def test_a_second_process_is_refused_and_a_restart_frees_dead_leases(tmp_path: Path) -> None:
    path = str(tmp_path / "one.db")
    first = SQLiteStore(path)
    await first.open()
    with pytest.raises(StoreError, match="another gateway process"):
        await SQLiteStore(path).open()
    job = NewJob(kind="send", route="r", source="a", destination="b", lane="r|b|c", payload={})
    await first.enqueue([job], 1.0)
    assert len(await first.claim("b", "dead-owner", 10, 3600.0, 1.0)) == 1
    await first.close()  # as if the owner died holding the lease
    second = SQLiteStore(path)
    await second.open()
    try:
        assert len(await second.claim("b", "new-owner", 10, 60.0, 2.0)) == 1
    finally:
        await second.close()
