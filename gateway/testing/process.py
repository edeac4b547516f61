"""Real servers for end-to-end tests: fakes on uvicorn in this loop, the gateway in a process.

No sleeps: a fake's socket is bound before uvicorn starts, so clients can connect at once,
and the gateway process is ready when it says so on its log stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

# Logged once the socket listens; "Application startup complete" comes before the bind.
READY_MARK = "Uvicorn running on"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a loopback port; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class GatewayProcess:
    """`gateway run` in a child process, with its log lines collected as they come."""

    def __init__(
        self,
        settings: Path,
        port: int,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.args = list(args)
        self.port = port
        self.env = {
            **os.environ,
            "GATEWAY_LOG_FORMAT": "json",
            # The test providers are no entry point: name them for the child's plugin host.
            "GATEWAY_TEST_PLUGINS": "gateway.testing.providers",
            **(env or {}),
        }
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--settings",
            str(self.settings),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        self.process = subprocess.Popen(
            command, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True, env=self.env
        )
        self._queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process, self._queue), daemon=True).start()
        await self.wait_for_line(READY_MARK, timeout)

    def _pump(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    async def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        """Block (in a thread) on the log stream until a line contains `needle`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no log line with {needle!r}; got:\n" + "\n".join(self.lines))
            try:
                line = await asyncio.to_thread(self._queue.get, True, remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("gateway exited:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            if needle in line:
                return line

    async def child_pid(self, role: str, after: int = 0) -> int:
        """With `[workers] delivery_process`: the pid of the `role` ("http", "delivery")
        process the supervisor started last, waiting for one that is not `after`."""
        mark = f"started the {role} process"
        while True:
            pids = [int(json.loads(line)["pid"]) for line in self.lines if mark in line]
            if pids and pids[-1] != after:
                return pids[-1]
            await self.wait_for_line(mark)

    async def kill_child(self, role: str) -> int:
        """SIGKILL the supervisor's `role` process and wait until it runs again (for the
        HTTP process: until it serves); returns the new pid."""
        pid = await self.child_pid(role)
        os.kill(pid, signal.SIGKILL)
        again = await self.child_pid(role, after=pid)
        if role == "http":
            await self.wait_for_line(READY_MARK)
        return again

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
