"""The one thread that owns the SQLite connection, and its group commit.

SQLite allows one writer at a time and every commit that acknowledges a webhook pays an
fsync, so instead of a connection pool there is a single thread with a queue. Each time it
wakes it takes *everything* queued (up to `MAX_BATCH`) and runs it in one transaction, each
operation inside its own SAVEPOINT: a failing operation rolls back only its own savepoint
and fails only its own future, while the rest share a single COMMIT and a single fsync.

Results are handed back on the caller's own loop: `submit_async` returns an asyncio
future that the thread resolves with `loop.call_soon_threadsafe` (a `LoopReply`; lighter
than a `concurrent.futures.Future` wrapped with `asyncio.wrap_future`, which costs a lock,
a condition and two callbacks per call); `submit` returns a `concurrent.futures.Future`
for callers without a loop. So stores work from any loop (or several, one after another).
Futures are resolved only once the commit is durable: an awaited write is on disk.

Durability without holding the write lock through the fsync. Processes sharing the file
take turns on its write lock (`sqlite_locks.WriterLock`), and with `synchronous=FULL` each
held it through its commit's fsync, so the other process's transaction waited for that
fsync too (half a millisecond on the machines measured; the lock was the bottleneck of
webhook ingest beside a delivery process). So a writer given the WAL's path commits with
`synchronous=NORMAL` (the commit appends its frames to the WAL without syncing it),
releases the lock, fdatasyncs the WAL, and only then answers its callers:

* an fdatasync covers every frame written to the file before it, so the answer still
  means durable, and one process's sync also covers the other's frames written before it;
* a transaction that wrote nothing is synced as well, since what it read may be another
  process's commit whose own sync is still under way (the first copy of a duplicate
  webhook), and its answer must not run ahead of that;
* SQLite still syncs the WAL before a checkpoint copies it into the database file and the
  database before the WAL is reused (it does both at NORMAL), so no frame is overwritten
  before it is durable;
* a process that dies between its commit and its sync loses nothing (the frames are in the
  kernel's cache), and its callers were not answered: power loss can take only commits that
  nobody was told about.

Checkpoints (the WAL copied back into the database file) are moved out of the lock too.
SQLite runs one inside the COMMIT that takes the WAL past 1,000 pages, copying them and
syncing both files while that writer still holds the lock (a quarter of the lock's busy
time under load, measured). Such a writer turns SQLite's automatic checkpoint off and runs
the same PASSIVE checkpoint itself, once every `CHECKPOINT_CHANGES` rows it has changed,
after answering its callers and with the lock free: a checkpoint and the other process's
writes may run at once (SQLite's WAL is built for that; a PASSIVE checkpoint never waits).

A failed fdatasync fails that transaction's callers and stops the writer: after a write-back
error the kernel may drop the pages and report success to the next fsync (PostgreSQL's
"fsyncgate"), so nothing this process commits afterwards could be trusted to be on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeAlias, TypeVar

from gateway.errors import StoreError
from gateway.store.sqlite_locks import WriterLock

log = logging.getLogger("gateway.store")

T = TypeVar("T")
Operation: TypeAlias = Callable[[sqlite3.Connection], Any]
_Reply: TypeAlias = "Future[Any] | LoopReply[Any]"
_Item: TypeAlias = tuple[Operation, _Reply]
#: A committed operation's answer, given once the commit is durable: (reply, ok, value).
_Outcome: TypeAlias = tuple[_Reply, bool, Any]

# Bounds the time one transaction holds the write lock and how long the first caller of a
# burst waits; large enough that a burst of webhooks still shares one fsync.
MAX_BATCH = 1000

#: Rows changed by a writer between two of its checkpoints: about the 1,000 pages after
#: which SQLite's own automatic checkpoint runs (a row changed writes about a page or less
#: to the WAL, its indexes included, once a commit's rows share their pages).
CHECKPOINT_CHANGES = 1000


def as_store_error(exc: BaseException) -> BaseException:
    """SQLite's own errors become `StoreError`; ours (and programming errors) pass through."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"SQLite: {exc}")
        error.__cause__ = exc
        return error
    return exc


class LoopReply(Generic[T]):
    """The writer thread's answer to one operation, delivered to an asyncio future on its
    loop; has the part of `concurrent.futures.Future`'s interface the thread uses."""

    __slots__ = ("_done", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        self._done = False

    def set_running_or_notify_cancel(self) -> bool:
        # A caller cancelled before its turn never runs (a benign race: one cancelled just
        # now still runs, and its result is dropped below).
        return not self.future.cancelled()

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._done = True
        self._call(_set_result, value)

    def set_exception(self, exc: BaseException) -> None:
        self._done = True
        self._call(_set_exception, exc)

    def _call(self, callback: Callable[[asyncio.Future[T], Any], None], value: Any) -> None:
        # A loop closed meanwhile has nobody waiting on it any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback, self.future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Writer:
    """Runs operations `fn(connection)` on a dedicated thread, grouped into transactions.

    `wal`, the path of the store's WAL file: commits are made durable by syncing it once
    `lock` is released (see the module's docstring); without it (an in-memory store),
    the connection's own `synchronous` setting applies."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        name: str,
        lock: WriterLock | None = None,
        wal: str | None = None,
    ) -> None:
        self._connect = connect
        self._wal_path = wal
        self._wal: int | None = None
        self._changes_at_checkpoint = 0
        # Set when a commit could not be made durable; every later call is refused with it.
        self._failure: str | None = None
        # Other processes sharing the file take turns with us on this lock (see
        # `sqlite_locks`), so SQLite never finds its write lock busy and never sleeps.
        self._lock = lock
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started: Future[None] = Future()
        self._stopped: Future[None] = Future()
        self._closing = False
        # Taken by submit and stop so nothing can be queued behind the stop marker.
        self._gate = threading.Lock()
        self.commits = 0  # transactions committed; lets tests observe group commit

    def start(self) -> Future[None]:
        """Connect on the thread; the future fails with the connect (or migration) error."""
        self._thread.start()
        return self._started

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        self._put(operation, future)
        return future

    def submit_async(self, operation: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`submit` for a caller on a running loop: an asyncio future of that loop."""
        reply: LoopReply[T] = LoopReply(asyncio.get_running_loop())
        self._put(operation, reply)
        return reply.future

    def _put(self, operation: Operation, reply: Future[Any] | LoopReply[Any]) -> None:
        with self._gate:
            if self._failure is not None:
                raise StoreError(self._failure)
            if self._closing or not self._thread.is_alive():
                raise StoreError("the SQLite store is closed")
            self._queue.put((operation, reply))

    def stop(self) -> Future[None]:
        """Finish what is queued, close the connection; the future resolves when done."""
        with self._gate:
            if not self._closing:
                self._closing = True
                self._queue.put(None)
        return self._stopped

    def _run(self) -> None:
        try:
            with self._locked():
                connection = self._connect()  # migrations write too
            if self._wal_path is not None:
                self._wal = self._open_wal(connection, self._wal_path)
        except BaseException as exc:
            if self._lock is not None:
                self._lock.close()
            self._started.set_exception(as_store_error(exc))
            self._stopped.set_result(None)
            return
        self._started.set_result(None)
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batch
                # A caller cancelled before its turn never runs; a running one cannot cancel.
                items = [i for i in batch if i is not None and i[1].set_running_or_notify_cancel()]
                if items and not self._transaction(connection, items):
                    break
        finally:
            with self._locked():  # the last connection to close checkpoints the WAL
                connection.close()
            if self._wal is not None:
                os.close(self._wal)
            if self._lock is not None:
                self._lock.close()
            self._fail_leftovers()
            self._stopped.set_result(None)

    def _fail_leftovers(self) -> None:
        # Only reached with work queued if the thread dies (an interpreter-level exception):
        # callers must not wait forever for it.
        with self._gate:
            self._closing = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                reason = self._failure or "the SQLite store thread stopped"
                item[1].set_exception(StoreError(reason))

    @staticmethod
    def _open_wal(connection: sqlite3.Connection, path: str) -> int:
        """The WAL's descriptor to sync; from here on commits leave the syncing to us."""
        try:
            wal = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            connection.close()
            raise StoreError(f"cannot open the store's WAL file {path}: {exc.strerror}") from exc
        try:
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA wal_autocheckpoint = 0")  # see `_checkpoint_if_due`
        except BaseException:
            os.close(wal)
            connection.close()
            raise
        return wal

    def _transaction(self, connection: sqlite3.Connection, items: list[_Item]) -> bool:
        """One transaction of `items`; False once the writer must stop (see `_sync`)."""
        with self._locked():
            outcomes = self._transaction_locked(connection, items)
        if outcomes and not self._sync(outcomes):
            return False
        for reply, ok, value in outcomes:
            if ok:
                reply.set_result(value)
            else:
                reply.set_exception(value)
        if self._wal is not None:
            self._checkpoint_if_due(connection)
        return True

    def _checkpoint_if_due(self, connection: sqlite3.Connection) -> None:
        """SQLite's automatic checkpoint, most of it with the write lock free (module
        docstring): the frames there are now are copied while the other process may write;
        then, holding the lock, those it wrote meanwhile. A checkpoint that other writes
        overlapped does not complete, and the WAL restarts from its beginning only after
        one that did: without the second step it grew to 276 MB in 6 s of load (measured)."""
        if connection.total_changes - self._changes_at_checkpoint < CHECKPOINT_CHANGES:
            return
        self._changes_at_checkpoint = connection.total_changes
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            with self._locked():
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            # The WAL only grows until the next try; nothing committed is at stake.
            log.warning("checkpointing %s failed (%s); tried again later", self._wal_path, exc)

    def _sync(self, outcomes: list[_Outcome]) -> bool:
        if self._wal is None:
            return True
        try:
            os.fdatasync(self._wal)
        except OSError as exc:
            self._failure = (
                f"the SQLite store stopped: a commit could not be written to disk ({exc}); "
                f"check the disk of {self._wal_path} and restart the gateway"
            )
            log.critical("%s", self._failure)
            with self._gate:
                self._closing = True
            for reply, _, _ in outcomes:
                reply.set_exception(StoreError(self._failure))
            return False
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def _transaction_locked(
        self, connection: sqlite3.Connection, items: list[_Item]
    ) -> list[_Outcome]:
        """Runs and commits `items`; the outcomes of a commit are returned, to be given once
        it is durable. Failures of a transaction that did not commit are given at once."""
        outcomes: list[_Outcome] = []
        try:
            # IMMEDIATE takes the write lock up front, so a busy database shows up here
            # (after busy_timeout) rather than as a failed upgrade halfway through the batch.
            connection.execute("BEGIN IMMEDIATE")
            if len(items) == 1:
                # Alone in its transaction, an operation needs no savepoint of its own
                # (two statements less for each quiet-time call): on failure the whole
                # transaction rolls back, which is all of it.
                operation, future = items[0]
                try:
                    value = operation(connection)
                except Exception as exc:
                    self._rollback(connection)
                    future.set_exception(as_store_error(exc))
                    return []
                connection.execute("COMMIT")
                self.commits += 1
                return [(future, True, value)]
            for operation, future in items:
                connection.execute("SAVEPOINT operation")
                try:
                    value = operation(connection)
                except Exception as exc:
                    connection.execute("ROLLBACK TO operation")
                    connection.execute("RELEASE operation")
                    outcomes.append((future, False, as_store_error(exc)))
                else:
                    connection.execute("RELEASE operation")
                    outcomes.append((future, True, value))
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            # The transaction itself broke (disk full, I/O error, commit failed): nothing
            # of the batch is stored, so every caller must hear about it.
            self._rollback(connection)
            for _, future in items:
                future.set_exception(as_store_error(exc))
            return []
        except BaseException as exc:
            self._rollback(connection)
            for _, future in items:
                if not future.done():
                    future.set_exception(StoreError(f"the SQLite store thread stopped: {exc!r}"))
            raise
        self.commits += 1
        return outcomes

    @staticmethod
    def _rollback(connection: sqlite3.Connection) -> None:
        # SQLite may have rolled back on its own; the batch is reported failed either way.
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
