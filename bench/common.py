"""What every benchmark shares: child processes, settings files, wrk, statistics.

Everything under load runs in its own process (`gateway run`, the bare endpoint, the fakes),
started here and stopped by its pid. Readiness is polled over HTTP: a benchmark may poll,
a test may not.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHATAPI_INSTANCE = "1101"
CHATAPI_SECRET = "bench-webhook-secret-0123456789"  # noqa: S105 (a fixture value)
B24_MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
B24_APP_TOKEN = "ec1b2074a9d3f5c81b6e40d27a95cf38"  # noqa: S105 (the fake's value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A child process with its output in a file; stopped with SIGTERM, then SIGKILL."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _family(self) -> list[int]:
        """The process and its children (the HTTP and delivery processes of `gateway run`)."""
        pids = [self.popen.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if stat.read_text().rpartition(")")[2].split()[1] == str(self.popen.pid):
                    pids.append(int(stat.parent.name))
            except OSError:
                continue  # ended meanwhile
        return pids

    def _memory_mb(self, field: str) -> float:
        total = 0.0
        for pid in self._family():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(rf"{field}:\s+(\d+) kB", text)
            total += int(match.group(1)) / 1024 if match else 0.0
        return total or float("nan")

    def rss_peak_mb(self) -> float:
        """VmHWM, the highest resident set size, of the process and its children, summed:
        an upper bound (forked children share pages, and their peaks need not coincide)."""
        return self._memory_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._memory_mb("VmRSS")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


#: The benchmarks' settings use the test providers (`test-channel`, `test-crm`), which are
#: no entry point: a child `gateway run` loads them as tests do (docs/plugins.md).
TEST_PLUGINS = {"GATEWAY_TEST_PLUGINS": "gateway.testing.providers"}


def code_env(code: Path) -> dict[str, str]:
    """Environment that makes a child import the gateway, its plugins and fakes from the
    source tree `code` rather than from the installed (editable) checkout."""
    if code == ROOT:
        return {}
    paths = [str(code), str(code / "plugins"), str(code / "fakes")]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def spawn(
    name: str, args: Sequence[str], port: int, workdir: Path, code: Path = ROOT, **env: str
) -> Proc:
    """`args` run by this interpreter on the source tree `code` (this checkout, or another
    one for a side-by-side baseline: see `code_env`)."""
    log = workdir / f"{name}.log"
    handle = open(log, "wb")  # noqa: SIM115 (the child owns it)
    popen = subprocess.Popen(  # noqa: S603 (our own interpreter and modules)
        [sys.executable, *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=code,
        env={**TEST_PLUGINS, **os.environ, **code_env(code), **env},
    )
    handle.close()
    return Proc(name, popen, port, log)


def received(crm: Proc, count: int, timeout: float) -> int:
    """Poll the CRM fake until it has `count` messages or `timeout` passes; what it has."""
    deadline = time.monotonic() + timeout
    while True:
        seen = int(get_json(crm.url + "/_stats")["count"])
        if seen >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def wait_http(proc: Proc, path: str = "/", timeout: float = 30.0, ok: int | None = None) -> float:
    """Poll until `path` answers (with status `ok` if given); returns seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(proc.url + path, timeout=2) as response:  # noqa: S310
                if ok is None or response.status == ok:
                    return time.perf_counter() - started
        except urllib.error.HTTPError as exc:
            if ok is None:
                return time.perf_counter() - started
            if exc.code != 503:
                raise
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(
                f"{proc.name} did not answer {path}:\n{proc.log.read_text()[-3000:]}"
            )
        time.sleep(0.005)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


@contextmanager
def server(kind: str, workdir: Path, *extra: str) -> Iterator[Proc]:
    """One of `bench.servers` (bare, crm, portal) in its own process."""
    port = free_port()
    proc = spawn(kind, ["-m", "bench.servers", kind, "--port", str(port), *extra], port, workdir)
    try:
        wait_http(proc, "/_ready")
        yield proc
    finally:
        proc.stop()


@contextmanager
def gateway(
    settings: Path, workdir: Path, name: str = "gateway", code: Path = ROOT
) -> Iterator[Proc]:
    port = free_port()
    args = ["-m", "gateway", "run", "--settings", str(settings), "--port", str(port)]
    proc = spawn(name, args, port, workdir, code)
    try:
        wait_http(proc, "/readyz", timeout=60, ok=200)
        yield proc
    finally:
        proc.stop()


def unpack_commit(work: Path, commit: str) -> Path | None:
    """The source tree of `commit`, unpacked into `work` (`git archive`), to run beside this
    checkout (`code=` of `spawn` and `gateway`); None without git history."""
    tree = work / f"code-{commit}"
    try:
        archive = subprocess.run(  # noqa: S603 (git, a fixed commit)
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],  # noqa: S607
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


@contextmanager
def workspace(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as path:
        yield Path(path)


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_settings(
    workdir: Path,
    *,
    channels: Mapping[str, Mapping[str, Any]],
    crms: Mapping[str, Mapping[str, Any]],
    routes: Mapping[str, Mapping[str, Any]],
    top: Mapping[str, Any] | None = None,
    workers: Mapping[str, Any] | None = None,
    db: str = "gateway.db",
) -> Path:
    lines = [
        'public_url = "http://127.0.0.1:1"',
        "allow_local_public_url = true",
        f'log_level = "{(top or {}).get("log_level", "INFO")}"',
        'log_format = "json"',
        "[store]",
        f'url = "sqlite:///{workdir / db}"',
        "[media]",
        f'directory = "{workdir / "media"}"',
        "[workers]",
        *(f"{k} = {toml_value(v)}" for k, v in (workers or {}).items()),
    ]
    for section, table in (("channels", channels), ("crms", crms), ("routes", routes)):
        for name, options in table.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    path = workdir / "settings.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def chatapi_to_crm(workdir: Path, crm_url: str) -> Path:
    """Settings of the usual bench gateway: the Chat API channel `wa` routed to the
    `test-crm` fake at `crm_url`."""
    return write_settings(
        workdir,
        channels={"wa": chatapi_channel()},
        crms={"crm": test_crm(crm_url)},
        routes={"main": {"channel": "wa", "crm": "crm"}},
    )


def chatapi_channel() -> dict[str, Any]:
    return {
        "provider": "chatapi",
        "base_url": f"http://127.0.0.1:9/instance{CHATAPI_INSTANCE}",
        "token": "bench-token",
        "webhook_secret": CHATAPI_SECRET,
        "set_webhook": False,
        "refill_on_start": False,
    }


def test_crm(url: str, max_batch: int = 50) -> dict[str, Any]:
    return {"provider": "test-crm", "base_url": url, "token": "crm-token", "max_batch": max_batch}


def count_rows(db: Path, sql: str, params: Sequence[Any] = ()) -> int:
    connection = sqlite3.connect(db)
    try:
        return int(connection.execute(sql, params).fetchone()[0])
    finally:
        connection.close()


# wrk -------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    non_2xx: int
    errors: int
    seconds: float
    rps: float
    latency_ms: dict[str, float] = field(default_factory=dict)


def wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    args: Sequence[str] = (),
) -> WrkResult:
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
        "-s", str(script), url, *(["--", *args] if args else []),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert total is not None, out
    seconds_taken = float(total.group(2)) * {"s": 1.0, "ms": 0.001, "m": 60.0}[total.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        latency[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return WrkResult(
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
        seconds=seconds_taken,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        latency_ms=latency,
    )


# statistics --------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median with its spread (min, max) over the repetitions."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
