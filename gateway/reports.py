"""What the delivery process tells the HTTP process(es) beside it (`[workers]
delivery_process`): its metrics and its problems.

Each process of a supervised gateway counts in its own memory, but a scrape of `/metrics`
or a look at `/readyz` reaches an HTTP process, which delivers nothing. So the delivery
process answers on a Unix stream socket, and an HTTP process asks it at the moment it is
scraped: one line naming what it wants (`metrics` or `ready`), one JSON document back, the
connection closed. Asked at scrape time rather than written to a file every second, the
counters are as fresh as those of one process, and an idle gateway does no work for them.

The address is derived from what both children share: the supervisor's pid and the address
of the socket it listens on (unique on the machine while it runs). It is in Linux's
abstract namespace (nothing to clean up after a SIGKILL); elsewhere a socket file in the
temporary directory.

An abstract address has no file permissions, and anyone on the machine can connect to it or
bind it first: on Linux each end checks the other's user (`SO_PEERCRED`) and talks only to
a process of its own user; the socket file elsewhere is made readable by its owner only.

The delivery process may be down (restarting after a crash) or slow to answer: the scrape
still answers, with this process's own series and `gateway_delivery_process_up 0`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any, Literal

from gateway.metrics import Metrics

log = logging.getLogger("gateway.reports")

#: How long an HTTP process waits for the delivery process's answer (a scrape's timeout is
#: 10 s by default; a busy event loop answers within milliseconds).
ASK_TIMEOUT = 2.0
UP = "gateway_delivery_process_up"
Question = Literal["metrics", "ready"]


def same_user(sock: socket.socket) -> bool:
    """Whether the process at the other end of `sock` runs as this process's user (always
    true where the kernel does not say: there the socket file's permissions decide)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return bool(uid == os.getuid())


def address(listen_fd: int) -> str | bytes:
    """The delivery process's report address, for a child of the supervisor."""
    with socket.socket(fileno=os.dup(listen_fd)) as sock:
        bound = sock.getsockname()
    key = f"{os.getppid()}|{bound!r}".encode()
    digest = hashlib.blake2b(key, digest_size=12).hexdigest()
    if sys.platform == "linux":
        return b"\0whatschat-gateway-report-" + digest.encode()
    return os.path.join(tempfile.gettempdir(), f"whatschat-gateway-{digest}.report")


class ReportServer:
    """The delivery process's end: answers every HTTP process that asks."""

    def __init__(
        self,
        where: str | bytes,
        metrics: Metrics,
        *,
        flush: Callable[[], None],
        problems: Callable[[], list[str]],
    ) -> None:
        self.address = where
        self.metrics = metrics
        self.flush = flush
        self.problems = problems
        self._server: asyncio.Server | None = None

    async def start(self) -> bool:
        """False (and a warning) if the address is taken: scrapes show no delivery series."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)  # left by a process that died
        try:
            sock.bind(self.address)
            if isinstance(self.address, str):
                os.chmod(self.address, 0o600)
        except OSError as exc:
            sock.close()
            log.warning("the delivery process cannot report its metrics (%s)", exc)
            return False
        self._server = await asyncio.start_unix_server(self._answer, sock=sock)
        return True

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    def report(self, question: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"pid": os.getpid(), "problems": self.problems()}
        if question == "metrics":
            self.flush()  # observations still queued are counted first
            answer["metrics"] = self.metrics.snapshot()
        return answer

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("socket")
            if peer is None or not same_user(peer):
                log.warning("a process of another user asked for the delivery report: refused")
                return
            async with asyncio.timeout(ASK_TIMEOUT):
                question = (await reader.readline()).decode(errors="replace").strip()
                writer.write(json.dumps(self.report(question)).encode())
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("a report was not delivered: %s", exc)
        except Exception:
            log.exception("the delivery process could not report")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class DeliveryPeer:
    """An HTTP process's end: asks the delivery process when it is scraped."""

    def __init__(self, where: str | bytes, metrics: Metrics) -> None:
        self.address = where
        self.up: bool | None = None
        metrics.gauge(
            UP,
            "1 when this scrape includes the delivery process's series; 0 when it did not "
            "answer (starting or restarting): its counters are missing from this scrape.",
        )
        self._metrics = metrics

    async def ask(self, question: Question) -> dict[str, Any] | None:
        """The delivery process's answer; None (logged once) when it gives none."""
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                answer = json.loads(await self._exchange(question))
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
        except (OSError, TimeoutError, ValueError) as exc:
            if self.up is not False:
                log.warning("the delivery process does not answer (%s)", exc or type(exc).__name__)
            self.up = False
            return None
        if self.up is False:
            log.info("the delivery process answers again")
        self.up = True
        return answer

    async def _exchange(self, question: Question) -> bytes:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.address)
            if not same_user(sock):
                raise OSError("the report address is held by a process of another user")
            await loop.sock_sendall(sock, question.encode() + b"\n")
            chunks: list[bytes] = []
            while chunk := await loop.sock_recv(sock, 1 << 16):
                chunks.append(chunk)
        return b"".join(chunks)

    async def metrics(self) -> Metrics:
        """This process's registry with the delivery process's series merged in."""
        answer = await self.ask("metrics")
        self._metrics.set(UP, 1.0 if answer is not None else 0.0)
        snapshot = answer.get("metrics") if answer is not None else None
        if not isinstance(snapshot, dict):
            return self._metrics
        return self._metrics.merged(snapshot)

    async def problems(self) -> list[str]:
        """The delivery process's problems (instances that failed to start there, its media
        store). Not answering is none: webhooks are still taken while the supervisor
        restarts it, and it stops the gateway when it cannot."""
        answer = await self.ask("ready")
        found = answer.get("problems") if answer is not None else None
        return [str(p) for p in found] if isinstance(found, list) else []
