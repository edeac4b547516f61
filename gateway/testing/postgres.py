"""PostgreSQL for tests: a schema of one's own on the server GATEWAY_TEST_POSTGRES_URL names.

Without that variable, or with a server that does not answer, tests that need it are
skipped with a message that says how to run them; under CI (CI=true) they fail instead,
because CI is where they must run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

ENV = "GATEWAY_TEST_POSTGRES_URL"
EXAMPLE = "postgresql://postgres@127.0.0.1:5432/test"


def problem() -> str | None:
    """Why the test server cannot be used (None when it can)."""
    url = os.environ.get(ENV, "")
    return f"{ENV} is not set" if not url else _unreachable(url)


def server_url() -> str:
    """The server's URL, or skip (fail in CI) with how to get one."""
    url = os.environ.get(ENV, "")
    found = problem()
    if found is None:
        return url
    message = (
        f"PostgreSQL not reachable ({found}); set {ENV}={EXAMPLE} "
        "(a server with a database you may create schemas in) to run these"
    )
    import pytest  # here: benchmarks use this module without pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _unreachable(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test]'"
    try:
        with psycopg.connect(url, connect_timeout=5):
            return None
    except psycopg.Error as exc:
        return f"at {url}: {str(exc).strip()}"


def execute(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


def with_schema(url: str, schema: str) -> str:
    """`url` with a search_path of `schema` (libpq's `options` parameter)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL on a new, empty schema, dropped afterwards with everything in it."""
    url = server_url()
    schema = f"t_{secrets.token_hex(6)}"
    execute(url, f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(url, schema)
    finally:
        execute(url, f"DROP SCHEMA {schema} CASCADE")


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"
