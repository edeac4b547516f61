"""Wake-ups from the HTTP process to the delivery process on one SQLite file.

PostgreSQL tells every process of new work through LISTEN/NOTIFY; SQLite has nothing of
the kind. So the delivery process binds a Unix datagram socket named after the database
file, and the HTTP process sends it the names of the destinations that got work, after
the commit that gave it to them (`STATE_CHANGED` for shared state). A datagram is only a
hint: lost ones (the delivery process restarting, a full socket buffer) cost at most one
poll interval, since the delivery process still polls the queue and the state versions.

The address is in Linux's abstract namespace (no file to clean up after a SIGKILL); on
other systems a socket file `<db>.wake`, made `0600`. Anyone on the machine may send to an
abstract address, so on Linux the receiver has the kernel attach each sender's credentials
(`SO_PASSCRED`) and drops what a process of another user sent: a stranger cannot make the
delivery process claim or reload in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable

log = logging.getLogger("gateway.wakeup")

#: A datagram carries names separated by newlines; `*` asks for every destination.
EVERYTHING = "*"
MAX_DATAGRAM = 8192
#: `SCM_CREDENTIALS` (pid, uid, gid), Linux only.
_CREDENTIALS = struct.Struct("3i")


def address(db_path: str) -> str | bytes:
    real = os.path.realpath(db_path)
    if sys.platform == "linux":
        digest = hashlib.blake2b(real.encode(), digest_size=12).hexdigest()
        return b"\0whatschat-gateway-" + digest.encode()
    return f"{real}.wake"


class WakeSender:
    """The HTTP process's end: names gathered over a loop turn go out as one datagram."""

    def __init__(self, db_path: str) -> None:
        self.address = address(db_path)
        self.sent = 0
        self.lost = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._pending: set[str] = set()
        self._scheduled = False

    def wake(self, name: str | None) -> None:
        self._pending.add(EVERYTHING if name is None else name)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        names, self._pending = self._pending, set()
        # Everything includes a change of shared state (see `Gateway._heard`).
        data = "\n".join(sorted(names)).encode() if EVERYTHING not in names else b"*"
        if len(data) > MAX_DATAGRAM:
            data = EVERYTHING.encode()
        try:
            self._socket.sendto(data, self.address)
        except OSError as exc:
            # Nobody listening (the delivery process is starting or restarting) or its
            # buffer is full: its poll finds the work, as it does for any lost hint.
            self.lost += 1
            log.debug("wake-up not sent (%s): the delivery process polls", exc)
        else:
            self.sent += 1

    def close(self) -> None:
        self._socket.close()


class WakeReceiver:
    """The delivery process's end: calls `heard(name)` for every name that arrives."""

    def __init__(self, db_path: str, heard: Callable[[str | None], None]) -> None:
        self.address = address(db_path)
        self.heard = heard
        self._socket: socket.socket | None = None

    def start(self) -> bool:
        """False (and a warning) if the address is taken: the poll stays the only way."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        if isinstance(self.address, str):
            # A file left by a process that died: nobody receives on it any more.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
        try:
            sock.bind(self.address)
            if isinstance(self.address, str):
                os.chmod(self.address, 0o600)
            elif hasattr(socket, "SO_PASSCRED"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except OSError as exc:
            sock.close()
            log.warning(
                "no wake-ups from the HTTP process (%s): delivery finds new work by polling", exc
            )
            return False
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        return True

    def _read(self) -> None:
        assert self._socket is not None
        checked = isinstance(self.address, bytes) and hasattr(socket, "SCM_CREDENTIALS")
        room = socket.CMSG_SPACE(_CREDENTIALS.size) if checked else 0
        while True:
            try:
                data, ancillary, _flags, _sender = self._socket.recvmsg(MAX_DATAGRAM, room)
            except (BlockingIOError, InterruptedError):
                return
            if checked and not _from_own_user(ancillary):
                log.warning("a wake-up from a process of another user was dropped")
                continue
            for name in data.decode(errors="replace").split("\n"):
                self.heard(None if name == EVERYTHING else name)

    def stop(self) -> None:
        sock, self._socket = self._socket, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)


def _from_own_user(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether the kernel's credentials of a datagram's sender name this process's user."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _pid, uid, _gid = _CREDENTIALS.unpack(data[: _CREDENTIALS.size])
            return bool(uid == os.getuid())
    return False
