"""Gateway CPU per delivered message (issue 17), the fakes excluded.

The CPU time (user + system, `/proc/PID/stat`) of the `gateway run` process and its
children (the HTTP and delivery processes of `[workers] delivery_process`), all threads,
divided by the messages the `crm` fake received meanwhile; the fake and the load
generator are other processes, so none of their work is counted.

* backlog: `BACKLOG` messages over 200 conversations queued in the store before the start
  (through the real planning and store code); measured from `/readyz` 200 until the
  fake has them all: the delivery side alone (claim, provider call, record).
* live: Chat API webhooks offered open-loop at 250 msg/s (`bench.loadgen`) for 10 s,
  measured from the first request until the fake has every message: ingest and delivery
  together, what one message costs the gateway end to end at a rate it carries easily.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench import common as c
from bench.b_latency import chatapi_body
from bench.b_scale import backlog
from bench.loadgen import build_request, open_loop

HZ = os.sysconf("SC_CLK_TCK")
#: "Today's figure" of issue 17, the target halves it: the same benchmark (full run) on the
#: code as the issue found it, measured in the session that added this benchmark.
BASELINE = {"commit": "4185f5e", "live_us_per_msg": 2060.0, "backlog_us_per_msg": 140.7}
CONVERSATIONS = 200
LIVE_RATE = 250.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (every thread) so far, and of its children
    alive now: with `[workers] delivery_process` the supervisor's HTTP and delivery
    processes (both live for the whole measurement)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / HZ


def _wait_count(crm: c.Proc, count: int, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        seen = int(c.get_json(crm.url + "/_stats")["count"])
        if seen >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def _settings(rundir: Path, crm: c.Proc) -> Path:
    return c.chatapi_to_crm(rundir, crm.url)


def _backlog(rundir: Path, crm: c.Proc, count: int) -> dict[str, Any]:
    rundir.mkdir()
    backlog(rundir / "gateway.db", CONVERSATIONS, count, rundir.name)
    c.post_json(crm.url + "/_reset", {})
    with c.gateway(_settings(rundir, crm), rundir) as gw:
        before, seen_before = cpu_seconds(gw.popen.pid), c.get_json(crm.url + "/_stats")
        started = time.monotonic()
        seen = _wait_count(crm, count)
        cpu = cpu_seconds(gw.popen.pid) - before
        elapsed = time.monotonic() - started
    stats = c.get_json(crm.url + "/_stats")
    delivered = seen - int(seen_before["count"])
    return {
        "delivered": delivered,
        "received": seen,
        "cpu_s": cpu,
        "us_per_msg": cpu / max(1, delivered) * 1e6,
        "seconds": elapsed,
        "messages_per_request": stats["count"] / max(1, stats["requests"]),
        "duplicates": stats["duplicates"],
    }


def _live(rundir: Path, crm: c.Proc, seconds: float) -> dict[str, Any]:
    rundir.mkdir()
    count = int(LIVE_RATE * seconds)
    c.post_json(crm.url + "/_reset", {})
    with c.gateway(_settings(rundir, crm), rundir) as gw:
        path = f"/webhooks/wa/{c.CHATAPI_SECRET}"
        host = f"127.0.0.1:{gw.port}"
        requests = [
            build_request(
                host, path, chatapi_body(i, CONVERSATIONS, rundir.name), "application/json"
            )
            for i in range(count)
        ]
        before = cpu_seconds(gw.popen.pid)
        samples = asyncio.run(open_loop("127.0.0.1", gw.port, requests, LIVE_RATE, connections=64))
        seen = _wait_count(crm, count)
        cpu = cpu_seconds(gw.popen.pid) - before
    return {
        "accepted": sum(1 for s in samples if s.status == 200),
        "delivered": seen,
        "cpu_s": cpu,
        "us_per_msg": cpu / max(1, seen) * 1e6,
    }


def delivery_cpu(quick: bool = False) -> dict[str, Any]:
    count, seconds, reps = (3000, 5.0, 3) if quick else (10000, 10.0, 3)
    backlogs: list[dict[str, Any]] = []
    lives: list[dict[str, Any]] = []
    with c.workspace("delivery-cpu") as work, c.server("crm", work) as crm:
        for rep in range(reps):
            backlogs.append(_backlog(work / f"backlog{rep}", crm, count))
            lives.append(_live(work / f"live{rep}", crm, seconds))
    return {
        "runs": backlogs,
        "live_runs": lives,
        "backlog_us_per_msg": c.summary([r["us_per_msg"] for r in backlogs]),
        "live_us_per_msg": c.summary([r["us_per_msg"] for r in lives]),
        "messages_per_request": c.summary([r["messages_per_request"] for r in backlogs]),
        "lost": sum(r["accepted"] - r["delivered"] for r in lives)
        + sum(count - r["received"] for r in backlogs),
        "setup": f"backlog of {count} messages over {CONVERSATIONS} conversations drained "
        f"into the crm fake; live: {LIVE_RATE:.0f} msg/s of Chat API webhooks for "
        f"{seconds:.0f} s; {reps} repetitions each, alternating; gateway process CPU "
        "(all threads) per message received by the fake",
    }
