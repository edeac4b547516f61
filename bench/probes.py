"""Measurements behind the analysis in `bench/notes.md`, one command each.

    python -m bench.probes threads   # CPU per thread of `gateway run` under wrk (Chat API)
    python -m bench.probes httpx     # CPU per httpx POST to the CRM fake, both transports
    python -m bench.probes idle      # CPU of an idle `gateway run` with 1,000 channels
    python -m bench.probes split     # CPU per webhook: bare, floor, gateway HTTP, delivery
    python -m bench.probes claim     # CPU of one SQLite claim of 50 jobs over 50 lanes
    python -m bench.probes low-rate  # CPU per message at 250 msg/s: bare, floor, httpx, gateway
    python -m bench.probes b24-form  # CPU of parsing one Bitrix24 event body
    python -m bench.probes fsync     # time of one 4 KiB write and fsync where the store lives
    python -m bench.probes sending   # Store.sending with 50,000 queued; claim + finish per job
    python -m bench.probes follow-up # a conversation's next message while its first is out
    python -m bench.probes drain     # a backlog's drain: CPU by thread, system calls (strace)
    python -m bench.probes wake-cost # CPU of a wake, a commit, an fsync, a hand-off at 250/s
    python -m bench.probes write-lock # the store's write lock under wrk: held, waited (perf)
    python -m bench.probes ingest-alone # ingest with delivery held back, against the floor

They print figures; nothing is written to `bench/results`. Like the benchmarks, they are
figures of one machine at one moment: compare them with each other, not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import common as c
from bench.b_ingest import CONVERSATIONS, WRK
from bench.b_latency import chatapi_body
from bench.b_startup import _prepare
from bench.probe_ingest import ingest_alone
from bench.probe_lock import write_lock
from gateway.http_transport import AsyncioTransport

HZ = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread of a process: the main thread (the event
    loop) by that name, the others by thread id (the kernel knows them all as "python")."""
    seconds: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        name = "event loop" if int(tid) == pid else f"thread {tid}"
        seconds[name] = (int(fields[11]) + int(fields[12])) / HZ
    return seconds


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def roles(pid: int) -> dict[str, int]:
    """The processes of `gateway run`: itself alone, or its HTTP and delivery children
    (`[workers] delivery_process`, named `gw-http` and `gw-delivery`), by role."""
    found: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rpartition(")")[2].split()[1] != str(pid):
                continue
            name = (stat.parent / "comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("gw-"):
            found[name.removeprefix("gw-")] = int(stat.parent.name)
    return found or {"all": pid}


def _shares(pid: int, seconds: float) -> dict[str, float]:
    before, started = thread_cpu(pid), time.monotonic()
    time.sleep(seconds)
    after, elapsed = thread_cpu(pid), time.monotonic() - started
    return {
        name: round((after[name] - before.get(name, 0.0)) / elapsed * 100, 1)
        for name in after
        if after[name] - before.get(name, 0.0) > 0
    }


def threads() -> None:
    with c.workspace("probe-threads") as work, c.server("crm", work) as crm:
        settings = c.chatapi_to_crm(work, crm.url)
        with c.gateway(settings, work) as gw:
            shares: dict[str, float] = {}
            pid = roles(gw.popen.pid).get("http", gw.popen.pid)
            sampler = threading.Thread(target=lambda: shares.update(_shares(pid, 6.0)), daemon=True)
            sampler.start()
            result = c.wrk(
                f"{gw.url}/webhooks/wa/{c.CHATAPI_SECRET}",
                WRK / "chatapi.lua",
                connections=32,
                seconds=8,
                args=["probe", str(CONVERSATIONS)],
            )
            sampler.join()
    print(f"gateway: {result.rps:.0f} req/s; CPU % of one core per thread of the process")
    print(f"that takes webhooks: {shares}")
    print("(the busiest other thread is the SQLite store's writer)")


def http_cost() -> None:
    """CPU of one httpx POST to the CRM fake on a kept-alive connection: through the
    gateway's own client (`services.http_client`: its transport, `gateway.http_transport`,
    sockets on asyncio; no cookie jar) and through httpx's default client (anyio),
    alternated."""
    from gateway.services import http_client

    body = orjson.dumps({"items": [{"key": "k", "conversation": "c", "text": "hello"}]})
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    clients = {
        "gateway client": http_client,
        "httpx default": lambda: httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0), limits=limits
        ),
    }

    async def run(url: str, make: Callable[[], httpx.AsyncClient]) -> float:
        async with make() as http:
            for _ in range(100):  # warm the connection pool
                await http.post(f"{url}/acks", content=body)
            count, started = 3000, time.process_time()
            for _ in range(count):
                await http.post(f"{url}/acks", content=body)
            return (time.process_time() - started) / count * 1e6

    costs: dict[str, list[float]] = {name: [] for name in clients}
    with c.workspace("probe-httpx") as work, c.server("crm", work) as crm:
        import uvloop

        for _ in range(3):
            for name, make in clients.items():
                costs[name].append(uvloop.run(run(crm.url, make)))
    for name, runs in costs.items():
        shown = ", ".join(f"{cost:.0f}" for cost in runs)
        print(f"httpx, {name}: {statistics.median(runs):.0f} us of CPU per POST (runs: {shown})")


@contextmanager
def _reference_servers(name: str) -> Iterator[tuple[Path, c.Proc, c.Proc, c.Proc]]:
    """A workspace with the bare endpoint, the durable floor and the CRM fake running."""
    with (
        c.workspace(name) as work,
        c.server("bare", work) as bare,
        c.server("floor", work, "--db", str(work / "floor.db")) as floor,
        c.server("crm", work) as crm,
    ):
        yield work, bare, floor, crm


def split() -> None:
    """CPU per webhook under `wrk -c32` (Chat API, benchmark 1's load), process by process:
    the bare endpoint, the durable floor, and the gateway's HTTP and delivery processes."""
    load = [WRK / "chatapi.lua"]
    rows: list[tuple[str, float, float]] = []
    with _reference_servers("probe-split") as (work, bare, floor, crm):
        for name, proc in (("bare endpoint", bare), ("durable floor", floor)):
            before = process_cpu(proc.popen.pid)
            url = f"{proc.url}/webhooks/wa/{c.CHATAPI_SECRET}"
            result = c.wrk(url, load[0], connections=32, seconds=8, args=[name[:4], "200"])
            used = process_cpu(proc.popen.pid) - before
            rows.append((name, result.rps, used / result.requests * 1e6))
        settings = c.chatapi_to_crm(work, crm.url)
        with c.gateway(settings, work) as gw:
            pids = roles(gw.popen.pid)
            started = {role: process_cpu(pid) for role, pid in pids.items()}
            url = f"{gw.url}/webhooks/wa/{c.CHATAPI_SECRET}"
            result = c.wrk(url, load[0], connections=32, seconds=8, args=["gw", "200"])
            # Delivery catches up after wrk stops; its CPU is counted until it has.
            c.received(crm, result.requests, 60.0)
            seen = c.get_json(crm.url + "/_stats")
            for role, pid in pids.items():
                used = process_cpu(pid) - started[role]
                rows.append((f"gateway, {role} process", result.rps, used / result.requests * 1e6))
    print(f"{'process':28} {'req/s':>7} {'CPU us per webhook':>19}")
    for name, rps, cost in rows:
        print(f"{name:28} {rps:7.0f} {cost:19.0f}")
    print(f"(CRM fake: {seen['count']} messages in {seen['requests']} POSTs)")


def claim_cost() -> None:
    """`sqlite_queue.claim`'s reads of its jobs as the store runs them (`claim_rows`: one
    statement for more than `FEW_LANES` lanes, falling back to a cursor a lane) against a
    cursor a lane always (`merged_prefixes`, the code before the eleventh pass): CPU per
    claim of 50 from backlogs of 1, 5 and 100 jobs in each of 200 lanes, and of 100 jobs in
    each of 20 lanes (fewer lanes than the limit and deep: the one statement overflows and
    the cursors follow, the case it costs more)."""
    import sqlite3

    from bench.b_scale import backlog
    from gateway.store import sqlite_queue as queue
    from gateway.store.sqlite_schema import STATEMENT_CACHE

    ways: dict[str, Any] = {
        "a cursor a lane (before)": lambda c, lanes: queue.merged_prefixes(
            c, [lane for lane, _ in lanes], 50
        ),
        "claim_rows": lambda c, lanes: queue.claim_rows(c, lanes, 50),
    }
    with c.workspace("probe-claim") as work:
        for lanes_count, per_lane in ((200, 1), (200, 5), (200, 100), (20, 100)):
            db = work / f"claim-{lanes_count}-{per_lane}.db"
            backlog(db, lanes_count, lanes_count * per_lane, "probe")
            connection = sqlite3.connect(
                str(db), isolation_level=None, cached_statements=STATEMENT_CACHE
            )
            (destination,) = connection.execute("SELECT destination FROM lanes LIMIT 1").fetchone()
            now = time.time()
            lanes = connection.execute(queue._DUE_LANES, (destination, now, now, 50)).fetchall()
            costs: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(3):  # alternated
                for name, read in ways.items():
                    started = time.process_time()
                    for _ in range(200):
                        assert len(read(connection, lanes)) == 50
                    costs[name].append((time.process_time() - started) / 200 * 1e6)
            connection.close()
            figures = ", ".join(f"{n}: {statistics.median(v):.0f} us" for n, v in costs.items())
            print(
                f"{lanes_count} lanes, {per_lane} jobs a lane: {figures}"
                " (CPU per claim's reads, median of 3)"
            )


def idle() -> None:
    with c.workspace("probe-idle") as work:
        settings = _prepare(work / "large", 1000)
        with c.gateway(settings, work / "large") as gw:
            time.sleep(2.0)  # past start-up
            shares = _shares(gw.popen.pid, 10.0)
    print(f"idle gateway, 1,000 channels: CPU % of one core per thread: {shares or 'none'}")


def low_rate() -> None:
    """CPU per message at 250 msg/s (benchmark 7's live rate), each part of a message's way
    on its own beside the gateway's whole: the bare endpoint answering a webhook, the durable
    floor (the same plus one store commit), one httpx POST to the CRM fake through the
    gateway's transport, and the gateway itself (webhook in, delivered to the fake)."""
    from bench.b_latency import chatapi_body
    from bench.loadgen import build_request, open_loop

    rate, seconds = 250.0, 6.0
    count = int(rate * seconds)

    def offer(port: int, path: str) -> None:
        host = f"127.0.0.1:{port}"
        requests = [
            build_request(host, path, chatapi_body(i, CONVERSATIONS, "low"), "application/json")
            for i in range(count)
        ]
        asyncio.run(open_loop("127.0.0.1", port, requests, rate, connections=64))

    async def posts(url: str) -> float:
        body = orjson.dumps({"items": [{"key": "k", "conversation": "c", "text": "hello"}]})
        async with httpx.AsyncClient(transport=AsyncioTransport()) as http:
            await http.post(f"{url}/acks", content=body)
            used, next_at = 0.0, time.monotonic()
            for _ in range(count):
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # the schedule
                started = time.process_time()
                await http.post(f"{url}/acks", content=body)
                used += time.process_time() - started
            return used / count * 1e6

    rows: list[tuple[str, float]] = []
    path = f"/webhooks/wa/{c.CHATAPI_SECRET}"
    with _reference_servers("probe-low-rate") as (work, bare, floor, crm):
        for name, proc in (("bare endpoint", bare), ("durable floor", floor)):
            before = process_cpu(proc.popen.pid)
            offer(proc.port, path)
            rows.append((name, (process_cpu(proc.popen.pid) - before) / count * 1e6))
        import uvloop

        rows.append(("httpx POST (client side)", uvloop.run(posts(crm.url))))
        c.post_json(crm.url + "/_reset", {})
        with c.gateway(c.chatapi_to_crm(work, crm.url), work) as gw:
            pids = roles(gw.popen.pid)
            started = {role: process_cpu(pid) for role, pid in pids.items()}
            offer(gw.port, path)
            if c.received(crm, count, 60.0) < count:
                raise SystemExit("the CRM fake did not get every message in 60 s")
            for role, pid in pids.items():
                used = process_cpu(pid) - started[role]
                rows.append((f"gateway, {role} process", used / count * 1e6))
    print(f"{rate:.0f} msg/s for {seconds:.0f} s, CPU us per message:")
    for name, cost in rows:
        print(f"  {name:34} {cost:7.0f}")


def b24_form() -> None:
    """CPU of reading benchmark 2's event body (ONIMCONNECTORMESSAGEADD, 21 fields) with the
    Bitrix24 plugin's form parser, the largest step of that webhook's handler."""
    import timeit

    from gateway_bitrix24.forms import parse_form

    from bench.b_ingest import bitrix24_event_template

    form = bitrix24_event_template().replace("@ID@", "123").replace("@CHAT@", "79001234567")
    body, number = form.encode(), 5000
    runs = [timeit.timeit(lambda: parse_form(body), number=number) / number * 1e6 for _ in range(5)]
    shown = ", ".join(f"{run:.0f}" for run in runs)
    print(f"Bitrix24 event form: {statistics.median(runs):.0f} us per body (runs: {shown})")


def fsync_time() -> None:
    """Wall time of one 4 KiB append and fsync in the benchmarks' workspace: what each of the
    durable commits on a message's way (the webhook's, the claim's) waits for at least."""
    with c.workspace("probe-fsync") as work:
        fd = os.open(work / "fsync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(200):
                    os.write(fd, b"x" * 4096)
                    os.fsync(fd)
                runs.append((time.perf_counter() - started) / 200 * 1e6)
        finally:
            os.close(fd)
    shown = ", ".join(f"{run:.0f}" for run in runs)
    print(f"4 KiB write + fsync: {statistics.median(runs):.0f} us (runs: {shown})")


def sending() -> None:
    """`Store.sending` (asked while a Chat API echo waits) with 50,000 jobs queued, and the
    store's CPU per job for claiming and finishing them 50 at a time (SQLite)."""
    from gateway.store.base import Finished
    from gateway.store.contract import LEASE, NOW, job
    from gateway.store.sqlite import SQLiteStore

    async def run(path: Path) -> tuple[float, float]:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            await store.enqueue([job(f"lane-{i % 500}", i) for i in range(50_000)], NOW)
            await store.claim("crm", "probe", 50, LEASE, NOW)  # some sends in flight
            looks = []
            for _ in range(20):
                started = time.perf_counter()
                await store.sending("crm", NOW - 60)
                looks.append(time.perf_counter() - started)
            started, done = time.process_time(), 0
            while done < 5000:
                jobs = await store.claim("crm", "probe", 50, LEASE, NOW)
                await store.finish([Finished(j.id) for j in jobs], "probe", NOW)
                done += len(jobs)
            return statistics.median(looks) * 1e6, (time.process_time() - started) / done * 1e6
        finally:
            await store.close()

    with c.workspace("probe-sending") as work:
        look, per_job = asyncio.run(run(work / "gateway.db"))
    print(f"Store.sending, 50,000 queued: {look:.0f} us; claim + finish: {per_job:.0f} us a job")


#: The last commit before `Store.finish` told its caller of work that came into a lane while
#: the lane was leased: `follow-up` measures it beside this checkout.
BEFORE_FOLLOW_UP_WAKE = "9e3a054"
FOLLOW_UP_CONVERSATIONS = 10


def _follow_ups(gateway: c.Proc, crm: c.Proc, tag: str) -> list[float]:
    """Per conversation, message A, then message B 20 ms later, while A is out with the CRM;
    conversations 300 ms apart. Returns B's waits (ms) from its 2xx until the CRM had it."""
    c.post_json(crm.url + "/_reset", {})
    url = f"{gateway.url}/webhooks/wa/{c.CHATAPI_SECRET}"
    answered: dict[str, float] = {}
    for conversation in range(FOLLOW_UP_CONVERSATIONS):
        for index in (conversation, conversation + FOLLOW_UP_CONVERSATIONS):
            body = chatapi_body(index, FOLLOW_UP_CONVERSATIONS, tag)
            request = urllib.request.Request(  # noqa: S310 (loopback)
                url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                response.read()
            answered[f"m{index}"] = time.time()
            time.sleep(0.02)
        time.sleep(0.3)
    if c.received(crm, 2 * FOLLOW_UP_CONVERSATIONS, 30.0) < 2 * FOLLOW_UP_CONVERSATIONS:
        raise RuntimeError("the CRM fake did not get every message within 30 s")
    arrived = {text: at for _chat, text, at in c.get_json(crm.url + "/_records")["received"]}
    second = range(FOLLOW_UP_CONVERSATIONS, 2 * FOLLOW_UP_CONVERSATIONS)
    return [(arrived[f"m{i}"] - answered[f"m{i}"]) * 1000 for i in second]


def follow_up() -> None:
    """A customer's second message, sent 20 ms after the first into the same conversation,
    while the first is out with a CRM that takes 100 ms a call (`max_batch` 50, as the
    benchmarks' CRM): B's wait from its 2xx until the CRM has it. Its lane is leased until
    A is recorded, so the claim its wake causes finds nothing. This checkout, alternately
    with `BEFORE_FOLLOW_UP_WAKE` (unpacked with git), where B waited for the delivery
    poller's next look (`workers.poll_interval`, 5 s)."""
    with c.workspace("probe-follow-up") as work, c.server("crm", work, "--delay", "0.1") as crm:
        trees = [("this checkout", c.ROOT)]
        if (before := c.unpack_commit(work, BEFORE_FOLLOW_UP_WAKE)) is not None:
            trees.append((BEFORE_FOLLOW_UP_WAKE, before))
        for rep in range(3):
            for name, code in trees:
                rundir = work / f"{rep}-{code.name}"
                rundir.mkdir()
                settings = c.chatapi_to_crm(rundir, crm.url)
                with c.gateway(settings, rundir, code=code) as gateway:
                    waits = _follow_ups(gateway, crm, f"{rep}{code.name}")
                print(
                    f"{name}: B waited p50 {statistics.median(waits):.0f} ms,"
                    f" max {max(waits):.0f} ms ({len(waits)} conversations)",
                    flush=True,
                )


def _strace_counts(path: Path) -> dict[str, int]:
    """Calls per system call from the table `strace -c` writes."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


def drain() -> None:
    """A backlog of 20,000 messages over 200 conversations, queued before the start and
    drained into the CRM fake (50 a POST): the delivery process's CPU per message by thread,
    then, in a second drain under `strace -c -f` (which slows it: read its counts, not its
    times), its system calls per 1,000 messages. Temporary files show as `openat`/`unlink`."""
    from bench.b_scale import backlog

    count = 20_000
    with c.workspace("probe-drain") as work, c.server("crm", work) as crm:
        for traced in (False, True):
            if traced and shutil.which("strace") is None:
                print("no strace here (apt-get install strace): system calls not counted")
                return
            rundir = work / ("strace" if traced else "cpu")
            rundir.mkdir()
            backlog(rundir / "gateway.db", 200, count, rundir.name)
            c.post_json(crm.url + "/_reset", {})
            with c.gateway(c.chatapi_to_crm(rundir, crm.url), rundir) as gw:
                pid = roles(gw.popen.pid).get("delivery", gw.popen.pid)
                tracer = None
                if traced:
                    table = rundir / "strace.txt"
                    command = ["strace", "-c", "-f", "-o", str(table), "-p", str(pid)]
                    tracer = subprocess.Popen(command, stderr=subprocess.DEVNULL)  # noqa: S603
                    time.sleep(0.5)  # attached before the count below starts
                seen = int(c.get_json(crm.url + "/_stats")["count"])
                before = thread_cpu(pid)
                if (done := c.received(crm, count, 300.0)) < count:
                    raise SystemExit("the CRM fake did not get every message in 300 s")
                after, delivered = thread_cpu(pid), done - seen
                if tracer is not None:
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait()
            if not traced:
                used = {name: after[name] - before.get(name, 0.0) for name in after}
                used = {name: cpu / delivered * 1e6 for name, cpu in used.items()}
                loop = used.pop("event loop", 0.0)
                print(
                    f"delivery process, CPU per message: {loop + sum(used.values()):.0f} us"
                    f" (event loop {loop:.0f}, other threads {sum(used.values()):.0f}: the"
                    " store's writer)"
                )
                continue
            calls = _strace_counts(table)
            calls.pop("total", None)  # strace's own sum row
            busiest = sorted(calls, key=lambda name: -calls[name])[:8]
            shown = [*busiest, *(name for name in ("openat", "unlink") if name not in busiest)]
            per = {name: calls.get(name, 0) * 1000 / delivered for name in shown}
            total = sum(calls.values()) * 1000 / delivered
            print(f"system calls of the delivery process per 1,000 messages: {total:.0f}")
            print("  " + ", ".join(f"{name} {value:.0f}" for name, value in per.items()))


def wake_cost() -> None:
    """CPU per event at 250 a second on uvloop, the rate of benchmark 7's live half, where
    each step of a message wakes a thread that was idle: a timer alone; one small
    transaction on the store's connection run on the event loop, without fsync
    (`synchronous = NORMAL`) and with it (`FULL`); the same transaction handed to the
    store's writer thread (`SQLiteStore`, as the gateway runs every store call: committed,
    then the WAL fdatasynced by the thread). Three rounds, alternated; the medians."""
    import sqlite3

    import uvloop

    from gateway.store.sqlite import SQLiteStore
    from gateway.store.sqlite_schema import connect

    rate, events = 250.0, 1500
    update = "UPDATE probe SET value = value + 1"

    def transaction(connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(update)
        connection.execute("COMMIT")

    async def paced(step: Callable[[], Any]) -> float:
        started, cpu = time.monotonic(), time.process_time()
        for n in range(events):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            await step()
        return (time.process_time() - cpu) / events * 1e6

    async def nothing() -> None:
        return None

    async def on_loop(db: Path, synchronous: str) -> float:
        connection = connect(str(db))
        connection.execute("CREATE TABLE probe (value INTEGER)")
        connection.execute("INSERT INTO probe VALUES (0)")
        connection.execute(f"PRAGMA synchronous = {synchronous}")

        async def step() -> None:
            transaction(connection)

        try:
            return await paced(step)
        finally:
            connection.close()

    async def handed_off(db: Path) -> float:
        store = SQLiteStore(str(db))
        await store.open()
        try:
            await store._run(lambda c: c.execute("CREATE TABLE probe (value INTEGER)"))
            await store._run(lambda c: c.execute("INSERT INTO probe VALUES (0)"))
            return await paced(lambda: store._run(lambda c: c.execute(update)))
        finally:
            await store.close()

    ways: dict[str, Callable[[Path], Any]] = {
        "a timer alone": lambda _db: paced(nothing),
        "+ a transaction on the loop, no fsync": lambda db: on_loop(db, "NORMAL"),
        "+ a transaction on the loop, fsync": lambda db: on_loop(db, "FULL"),
        "+ a transaction handed to the writer": handed_off,
    }
    costs: dict[str, list[float]] = {name: [] for name in ways}
    with c.workspace("probe-wake") as work:
        for round_ in range(3):
            for index, (name, way) in enumerate(ways.items()):
                db = work / f"wake-{round_}-{index}.db"
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    costs[name].append(runner.run(way(db)))
    print(f"{rate:.0f} events/s, CPU us per event (median of 3):")
    for name, values in costs.items():
        print(f"  {name:42} {statistics.median(values):5.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    probes = {"threads": threads, "httpx": http_cost, "idle": idle, "split": split}
    probes["claim"] = claim_cost
    probes["low-rate"] = low_rate
    probes["b24-form"] = b24_form
    probes["fsync"] = fsync_time
    probes["sending"] = sending
    probes["follow-up"] = follow_up
    probes["drain"] = drain
    probes["wake-cost"] = wake_cost
    probes["write-lock"] = write_lock
    probes["ingest-alone"] = ingest_alone
    parser.add_argument("probe", choices=list(probes))
    args = parser.parse_args()
    probes[args.probe]()


if __name__ == "__main__":
    main()
