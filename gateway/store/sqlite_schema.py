"""Opening a SQLite database: pragmas, then the versioned migrations.

Durability: the database runs in WAL mode with `synchronous=FULL`. With NORMAL alone, a
WAL commit is not fsynced and the last transactions can vanish on power loss or an OS crash
(not on a process crash). Those transactions are exactly the ones whose webhooks were
already answered 200, and the sender will never redeliver them, so NORMAL alone would break
"persisted before acknowledged". A store's writer thread (`sqlite_thread`) switches its
connection to NORMAL only because it then fdatasyncs the WAL itself after each commit,
before answering anyone, once the file's write lock is free for the other process. Either
way one fsync per commit; group commit spreads it over every operation queued at that
moment.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import MigrationError, StoreError
from gateway.store.migrations import Migration, load_migrations

BACKEND = "sqlite"
MEMORY = ":memory:"

log = logging.getLogger("gateway.store")

# Another process (an admin CLI, a backup) may hold the lock briefly; wait rather than fail.
BUSY_TIMEOUT_MS = 5000


#: Room in each connection's statement cache (Python's default is 128).
STATEMENT_CACHE = 512


def _owner_only(path: str) -> None:
    """Close a store file (and its -wal/-shm) that an older release created group- or
    world-readable: it holds tokens and messages."""
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            mode = os.stat(name).st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(name, 0o600)
            log.warning("the store file %s was readable by others (%o); now 0600", name, mode)


def connect(path: str) -> sqlite3.Connection:
    """A configured, fully migrated connection (to be used on one thread only)."""
    if path != MEMORY:
        try:
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Owner only: the store holds tokens and messages. SQLite gives its -wal and
            # -shm files the database file's mode.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            _owner_only(path)
        except OSError as exc:
            raise StoreError(f"cannot create the store {path}: {exc}") from exc
    # isolation_level=None: the writer issues BEGIN/SAVEPOINT/COMMIT itself. The statement
    # cache holds every statement the store uses, `claim`'s one per open lane cursor
    # included (`sqlite_queue.lane_prefix`): a statement that misses it is compiled anew.
    connection = sqlite3.connect(path, isolation_level=None, cached_statements=STATEMENT_CACHE)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        # 16 MB of page cache: a large batch (a backlog enqueued at once) stays in memory.
        connection.execute("PRAGMA cache_size = -16000")
        migrate(connection, load_migrations(BACKEND))
        # Savepoint journals in memory: a commit shared by several operations gives each a
        # savepoint, whose copies of the pages it touches went past 64 KiB into a new file
        # in /var/tmp (page images of the store outside its directory, and a file created
        # for most delivery batches). Set after the migrations: an index built over a large
        # table keeps sorting through files.
        connection.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        connection.close()
        raise
    return connection


def current_version(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Apply pending migrations, each in its own transaction; returns the final version.

    The version is re-read under the write lock before each step, so two processes opening
    one file at the same time do not both apply the same migration.
    """
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    latest = max((m.version for m in migrations), default=0)
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = current_version(connection)
            if current > latest:
                raise MigrationError(
                    f"the store's schema is at version {current} but this gateway only knows "
                    f"up to version {latest}: upgrade the gateway, or point it at another "
                    "database"
                )
            pending = [m for m in migrations if m.version > current]
            if pending:
                _apply(connection, pending[0])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if not pending:
            return current


def _apply(connection: sqlite3.Connection, migration: Migration) -> None:
    # Statement by statement rather than executescript(), which would COMMIT first and
    # make a half-applied migration possible.
    try:
        for statement in _statements(migration.sql):
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
    except sqlite3.Error as exc:
        raise MigrationError(
            f"SQLite migration {migration.version:04d}_{migration.name} failed: {exc}"
        ) from exc


def _statements(sql: str) -> list[str]:
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise MigrationError(f"unterminated SQL statement in migration: {pending.strip()!r}")
    return statements


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())
