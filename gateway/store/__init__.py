"""Persistence: the `Store` interface and `open_store`, which picks a backend by URL.

URLs: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite://:memory:`
and (with the `postgres` extra) `postgresql://user:password@host/database`.
"""

from __future__ import annotations

from gateway.errors import StoreError
from gateway.store.base import Store

__all__ = ["Store", "open_store"]

SUPPORTED = "sqlite:///relative.db, sqlite:////absolute.db, sqlite://:memory:, postgresql://..."


def open_store(
    url: str, *, tool: bool = False, shared: bool = False, delivers: bool = True
) -> Store:
    """The store `url` names, not yet opened: `await store.open()` connects and migrates.

    `tool=True` is for commands (`gateway replay`) that work beside a running gateway: they
    neither take the single-process lock of a SQLite store nor free its leases.
    `shared=True` is for the processes of one supervised gateway (`gateway.supervisor`):
    the supervisor holds that lock, and only the process that `delivers` frees leases.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise StoreError(f"store URL {url!r} has no scheme; supported: {SUPPORTED}")
    scheme = scheme.lower()
    if scheme == "sqlite":
        from gateway.store.sqlite import SQLiteStore

        path = _sqlite_path(url, rest)
        if shared:
            return SQLiteStore(path, url=url, shared=True, free_leases=delivers)
        return SQLiteStore(path, url=url, exclusive=not tool)
    if scheme in {"postgresql", "postgres"}:
        # `tool` changes nothing here: a PostgreSQL store is shared by design, and leases
        # of a dead process expire instead of being freed at open.
        try:
            from gateway.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store backend is not installed ({exc.name} is missing): "
                "pip install 'whatschat-gateway[postgres]'"
            ) from None
        return PostgresStore(url)
    raise StoreError(f"unknown store URL scheme {scheme!r} in {url!r}; supported: {SUPPORTED}")


def _sqlite_path(url: str, rest: str) -> str:
    if rest in {":memory:", "/:memory:"}:
        return ":memory:"
    if "?" in rest:
        raise StoreError(f"store URL {url!r}: SQLite URLs take no query parameters")
    if not rest.startswith("/") or rest == "/":
        raise StoreError(
            f"store URL {url!r} names no file: use sqlite:///relative/path.db "
            "(three slashes) or sqlite:////absolute/path.db (four)"
        )
    # What follows the third slash is the path: relative, or absolute with its own slash.
    return rest[1:]
