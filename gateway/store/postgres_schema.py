"""Opening a PostgreSQL store: the versioned migrations, under a lock shared by processes.

Several gateway processes may start at once on one database (a rolling upgrade, `--workers
N`). Each applies pending migrations inside one transaction that first takes a
transaction-level advisory lock keyed by the schema, so exactly one of them migrates and
the others then find the schema current. DDL is transactional in PostgreSQL: a migration
that fails leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import time

import psycopg
from psycopg import sql

from gateway.errors import MigrationError
from gateway.store.migrations import Migration, load_migrations

BACKEND = "postgres"


def advisory_key(scope: str, name: str) -> int:
    """A signed 64-bit advisory lock key for `name` within `scope` (the schema)."""
    digest = hashlib.blake2b(f"{scope}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema; the `jobs_notify` trigger builds the same."""
    return f"gateway.{schema}"[:63]


async def current_version(connection: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    cursor = await connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0  # type: ignore[call-overload]


async def migrate(
    connection: psycopg.AsyncConnection[tuple[object, ...]],
    schema: str,
    migrations: tuple[Migration, ...] | None = None,
) -> int:
    """Apply pending migrations; returns the version the store is at afterwards."""
    migrations = load_migrations(BACKEND) if migrations is None else migrations
    latest = max((m.version for m in migrations), default=0)
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema, "migrations"),)
        )
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
        current = await current_version(connection)
        if current > latest:
            raise MigrationError(
                f"the store's schema is at version {current} but this gateway only knows "
                f"up to version {latest}: upgrade the gateway, or point it at another database"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                # No parameters: the file goes as one simple query, several statements and
                # function bodies with semicolons included.
                await connection.execute(sql.SQL(migration.sql))
            except psycopg.Error as exc:
                raise MigrationError(
                    f"PostgreSQL migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
            current = migration.version
    return current
