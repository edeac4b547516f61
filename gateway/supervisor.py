"""`gateway run` with a delivery process: one supervisor, its HTTP process(es), one delivery
process, all sharing the store (`[workers] delivery_process`).

The supervisor binds the listening socket (so a port in use is reported before anything
starts, and connections wait in its backlog while an HTTP process restarts), holds a SQLite
store's `<db>.lock`, and starts the HTTP process(es) (`--workers N` of them, on the inherited
socket) and the delivery process. It forks them once it has read and checked the settings
and loaded the plugins, so a child starts from there instead of from a new interpreter (a
child used to be `gateway run --role ROLE`: the imports and the settings again, doubling the
start-up); the supervisor itself never runs an event loop or a thread, which keeps the fork
safe. It restarts a child
that dies, SIGKILL included, after a short backoff; it gives up, stops the others and exits
1 when a child keeps failing within `QUICK_EXIT` seconds of its start. A SIGKILL is not a
failure of the child's own (the OOM killer, an operator, a chaos test sent it): it delays the
restart like one but never makes the supervisor give up, since stopping the HTTP process
would refuse every webhook for a delivery process someone else keeps killing. SIGTERM and
SIGINT are forwarded for a clean stop.

The children inherit the read end of a pipe whose write end only the supervisor holds:
when the supervisor dies, even by SIGKILL, the kernel closes it, the children read EOF and
stop themselves. They also inherit `<db>.lock`, so no other gateway can open the file until
the last of them is gone. Leases of a killed delivery process are freed by the next one at
its start on SQLite (it is the only process that takes any) and expire on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from gateway.errors import ConfigProblem, StoreError
from gateway.plugins import PluginHost
from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.supervisor")

Role = Literal["http", "delivery"]
#: A child that exits within this many seconds of its start failed to start.
QUICK_EXIT = 10.0
#: Consecutive failed starts of one child after which the supervisor gives up.
MAX_QUICK_EXITS = 5
#: The wait before a restart; doubled after each quick death, up to `MAX_BACKOFF`.
BACKOFF = 0.1
MAX_BACKOFF = 10.0
#: How long a stop waits for the children before it kills them.
STOP_TIMEOUT = 30.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def sqlite_file(url: str) -> str | None:
    """The file of a `sqlite:` store URL (None for PostgreSQL and `:memory:`)."""
    path = getattr(importlib.import_module("gateway.store").open_store(url), "path", None)
    return path if isinstance(path, str) and path != ":memory:" else None


def wanted(settings: GatewaySettings) -> tuple[bool, list[ConfigProblem]]:
    """Whether `gateway run` starts a delivery process (`[workers] delivery_process`)."""
    setting = settings.workers.delivery_process
    url = settings.store_url
    shared = url.lower().startswith(("postgresql:", "postgres:")) or sqlite_file(url)
    if setting == "auto":
        return bool(shared) and (os.cpu_count() or 1) > 1, []
    if setting and not shared:
        problem = ConfigProblem(
            "workers.delivery_process",
            f"is true, but the store {url!r} lives in one process's memory and cannot be shared",
            'use a file (sqlite:///var/gateway.db) or set delivery_process = "auto" or false',
            settings.origin("workers.delivery_process"),
        )
        return False, [problem]
    return bool(setting), []


@dataclass
class Child:
    role: Role
    index: int
    process: Forked | None = None
    started_at: float = 0.0
    #: Deaths in a row within `QUICK_EXIT` of their start, and those of them that were
    #: the child's own failures (not a SIGKILL).
    quick_deaths: int = 0
    quick_exits: int = 0
    restart_at: float = 0.0


class Forked:
    """A child forked by the supervisor: the part of `subprocess.Popen` the watch uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N for signal N
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.01)  # as `Popen.wait` with a timeout does
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Supervisor:
    """Starts, watches, restarts and stops the children (see module)."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: GatewaySettings,
        host: PluginHost,
        options: dict[str, Any],
    ) -> None:
        self.args = args
        self.settings = settings
        self.host = host
        self.options = options
        self.children = [Child("delivery", 0)]
        self.children += [Child("http", i) for i in range(args.workers)]
        self._signals_r, self._signals_w = os.pipe()
        self._death_r, self._death_w = os.pipe()
        self._socket: socket.socket | None = None
        self._lock: IO[bytes] | None = None

    def run(self) -> int:
        path = sqlite_file(self.settings.store_url)
        try:
            if path is not None:
                locks = importlib.import_module("gateway.store.sqlite_locks")
                self._lock = locks.exclusive_lock(path)
            self._socket = _bind(self.settings.host, self.settings.port)
        except (StoreError, OSError) as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            self._close()
            return EXIT_FAILED
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, _noted)
        os.set_blocking(self._signals_w, False)
        os.set_blocking(self._signals_r, False)
        previous = signal.set_wakeup_fd(self._signals_w)
        try:
            return self._watch()
        finally:
            signal.set_wakeup_fd(previous)
            self._close()

    def _close(self) -> None:
        for fd in (self._signals_r, self._signals_w, self._death_r, self._death_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._socket is not None:
            self._socket.close()
        if self._lock is not None:
            self._lock.close()

    def _spawn(self, child: Child) -> None:
        assert self._socket is not None
        role_args = argparse.Namespace(**vars(self.args))
        role_args.role = child.role
        role_args.listen_fd = self._socket.fileno()
        role_args.supervisor_fd = self._death_r
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write the supervisor's buffered output again
        pid = os.fork()
        if pid == 0:
            self._run_forked(role_args)  # never returns
        child.process = Forked(pid)
        child.started_at = time.monotonic()
        log.info(
            "started the %s process (pid %d)",
            child.role,
            pid,
            extra={"role": child.role, "pid": pid},
        )

    def _run_forked(self, role_args: argparse.Namespace) -> None:
        """The child's side of the fork: shed the supervisor's signal handling and its ends
        of the pipes, run the role, and leave without running the supervisor's code on."""
        code = EXIT_FAILED
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            # The write end of the supervisor's pipe must close with the supervisor alone.
            for fd in (self._signals_r, self._signals_w, self._death_w):
                os.close(fd)
            _name_process(f"gw-{role_args.role}")
            code = run_child(role_args, self.settings, self.host, self.options)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except BaseException:
            log.exception("the %s process failed", role_args.role)
        finally:
            logging.shutdown()
            os._exit(code)

    def _watch(self) -> int:
        while True:
            now = time.monotonic()
            waiting = [c for c in self.children if c.process is None]
            for child in waiting:
                if child.restart_at <= now:
                    self._spawn(child)
            later = [c.restart_at - now for c in self.children if c.process is None]
            timeout = max(0.0, min(later)) if later else None
            with contextlib.suppress(InterruptedError):
                select.select([self._signals_r], [], [], timeout)
            heard = self._drain()
            if signal.SIGTERM in heard or signal.SIGINT in heard:
                log.info("stopping: the HTTP and delivery processes finish their work")
                self._stop()
                return EXIT_OK
            for child in self.children:
                if child.process is None or child.process.poll() is None:
                    continue
                if not self._exited(child):
                    self._stop()
                    return EXIT_FAILED

    def _drain(self) -> set[int]:
        heard: set[int] = set()
        while True:
            try:
                data = os.read(self._signals_r, 64)
            except BlockingIOError:
                return heard
            if not data:
                return heard
            heard.update(data)

    def _exited(self, child: Child) -> bool:
        """A child died: schedule its restart; False when it keeps failing to start."""
        assert child.process is not None
        code, pid = child.process.poll(), child.process.pid
        assert code is not None  # the watch calls this for a child that exited
        ran = time.monotonic() - child.started_at
        child.process = None
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        if ran >= QUICK_EXIT:
            child.quick_deaths = child.quick_exits = 0
        else:
            child.quick_deaths += 1
            if code != -signal.SIGKILL:
                child.quick_exits += 1
        if child.quick_exits >= MAX_QUICK_EXITS:
            log.error(
                "the %s process failed %d times within %g s of its start (last: %s); "
                "stopping the gateway (its log above says why)",
                child.role,
                child.quick_exits,
                QUICK_EXIT,
                how,
            )
            return False
        delay = min(MAX_BACKOFF, BACKOFF * 2**child.quick_deaths)
        log.error(
            "the %s process (pid %d) died after %.1f s (%s); restarting it in %g s",
            child.role,
            pid,
            ran,
            how,
            delay,
        )
        child.restart_at = time.monotonic() + delay
        return True

    def _stop(self) -> None:
        running = [c.process for c in self.children if c.process is not None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process %d did not stop within %g s: killed", process.pid, STOP_TIMEOUT)
                process.kill()
                process.wait()
        for child in self.children:
            child.process = None


def _name_process(name: str) -> None:
    """Show `name` for this process in `ps` and `top` (Linux's `comm`, 15 bytes): a forked
    child would otherwise look exactly like the supervisor."""
    with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/comm", "w") as comm:
        comm.write(name[:15])


def _noted(signum: int, frame: Any) -> None:
    """Signals are read from the wake-up pipe (`signal.set_wakeup_fd`) by the watch loop."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


# the children ------------------------------------------------------------------------------
def watch_supervisor(fd: int) -> None:
    """Stop this process (SIGTERM to itself) when the supervisor is gone: EOF on `fd`."""

    def wait() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        log.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="supervisor-watch", daemon=True).start()


def run_child(
    args: argparse.Namespace,
    settings: GatewaySettings,
    host: PluginHost,
    options: dict[str, Any],
) -> int:
    """The `role` process (`args.role`), forked by the supervisor, which checked the
    settings (or `gateway run --role ROLE`, by hand)."""
    watch_supervisor(args.supervisor_fd)
    role: Role = args.role
    gateway = importlib.import_module("gateway.runtime").Gateway(settings, host, role=role)
    reports = importlib.import_module("gateway.reports")
    where = reports.address(args.listen_fd)
    if role == "http":
        gateway.delivery_peer = reports.DeliveryPeer(where, gateway.metrics)
        return run_http(gateway, options, args.listen_fd)
    return run_delivery(gateway, where)


def run_http(gateway: Any, options: dict[str, Any], listen_fd: int) -> int:
    """One HTTP process on the supervisor's socket."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                # uvicorn says so only for sockets it bound itself; scripts wait for it.
                host, port = sock.getsockname()[:2]
                log.info("Uvicorn running on http://%s:%d (pid %d)", host, port, os.getpid())

    app = importlib.import_module("gateway.app").create_app(gateway)
    server = Server(uvicorn.Config(app, **options))
    sock = socket.socket(fileno=listen_fd)
    server.run(sockets=[sock])
    return EXIT_OK if server.started else EXIT_FAILED


def run_delivery(gateway: Any, where: str | bytes) -> int:
    """The delivery process: the gateway without HTTP, until SIGTERM or SIGINT; it answers
    the HTTP processes' questions at `where` (`gateway.reports`)."""
    reports = importlib.import_module("gateway.reports")
    server = reports.ReportServer(
        where, gateway.metrics, flush=gateway.notifier.flush, problems=gateway.own_problems
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await gateway.start()
        try:
            await server.start()
            log.info("delivery process ready (pid %d)", os.getpid())
            await stop.wait()
        finally:
            await server.stop()
            await gateway.stop()

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if importlib.util.find_spec("uvloop") is not None:
        factory = importlib.import_module("uvloop").new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except Exception:
        log.exception("the delivery process failed")
        return EXIT_FAILED
    return EXIT_OK
