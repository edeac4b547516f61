"""The file locks beside a SQLite store, so that processes sharing it take turns without
SQLite's busy handler.

* `<db>.lock` (`exclusive_lock`): held for as long as a gateway uses the file; a second
  gateway is refused at open. Under the supervisor (`gateway.supervisor`) the supervisor
  takes it and its children inherit it, so it is free only once every one of them is gone.
* `<db>.writer` (`WriterLock`): held by a store's writer thread from `BEGIN IMMEDIATE` to
  `COMMIT`. SQLite itself waits for a busy write lock by sleeping (1 to 100 ms steps), which
  made a webhook's commit wait tens of milliseconds behind another process's transaction;
  the kernel wakes a process waiting on `flock` the moment the lock is free.
* `<db>.names` (`NamedLocks`): `Store.lock(name)` between processes, one byte of the file
  per name (POSIX record locks): token refreshes and history imports stay single-flight.

The kernel drops every one of them when its holder dies (SIGKILL included).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from typing import IO

from gateway.aio import LocksByName
from gateway.errors import StoreError

#: Bounds the wait between two tries of a named lock another process holds. Named locks
#: guard rare, slow work (a token refresh, a history import): polling costs nothing there.
NAMED_LOCK_MAX_WAIT = 0.05
_NAME_SPACE = 1 << 40


def _open_beside(path: str, suffix: str) -> int:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of {path}: {exc.strerror}") from exc
    try:
        return os.open(f"{path}{suffix}", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create {path}{suffix}: {exc.strerror}") from exc


def exclusive_lock(path: str) -> IO[bytes]:
    """Hold `<path>.lock` for as long as the store is open; the kernel drops it if we die."""
    handle = os.fdopen(_open_beside(path, ".lock"), "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(
            f"another gateway process is using the SQLite store {path}; a SQLite store "
            "serves one gateway (its HTTP and delivery processes, under one `gateway run`; "
            "use a postgresql:// store URL to run several)"
        ) from None
    return handle


class WriterLock:
    """`<db>.writer`, taken around each write transaction (on the writer thread)."""

    def __init__(self, path: str) -> None:
        self._fd = _open_beside(path, ".writer")

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class NamedLocks:
    """`Store.lock(name)` across processes: an asyncio lock per name inside this process
    (waiters queue in order), then a record lock on the name's byte of `<db>.names`."""

    def __init__(self, path: str) -> None:
        # One descriptor for the store's lifetime: closing any descriptor of the file would
        # drop every record lock this process holds on it.
        self._fd = _open_beside(path, ".names")
        self._local = LocksByName()

    def close(self) -> None:
        os.close(self._fd)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        async with self._local[name]:
            offset = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest())
            offset %= _NAME_SPACE
            wait = 0.001
            while not self._try(offset):
                await asyncio.sleep(wait)
                wait = min(wait * 2, NAMED_LOCK_MAX_WAIT)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    def _try(self, offset: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise StoreError(f"cannot lock {name_of(self._fd)}: {exc.strerror}") from exc
        return True


def name_of(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")
    return f"descriptor {fd}"
