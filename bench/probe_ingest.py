"""`python -m bench.probes ingest-alone`: the gateway's webhook ingest with delivery held
back, against its durable floor, and what each costs a webhook, thread by thread.

Benchmark 1 measures the gateway as it runs, with its delivery process claiming, posting
and recording every message on the same two cores and the same SQLite write lock. The
target "at least 0.8x its own durable floor" is about the gateway's own work on a webhook,
so this probe also measures it without delivery: the CRM fake answers only after 600 s, so
the delivery process sends its first batches and then waits, idle, while `wrk -c32` posts
Chat API webhooks (benchmark 1's load). Three settings, alternated, `REPETITIONS` times:

* the floor: the bare endpoint plus one write through the gateway's store (`bench.servers`);
* the gateway, its delivery waiting on the slow CRM fake: ingest alone;
* the gateway delivering to the usual CRM fake: benchmark 1's gateway.

For each it prints req/s (median, and its ratio to the floor's) and the CPU per webhook of
the process that takes the webhooks: its event loop (HTTP, parsing, planning) and its
other threads (the store's writer: SQL, commit, fsync), and of the delivery process.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import common as c
from bench.b_ingest import CONVERSATIONS, WRK

REPETITIONS = 3
WRK_SECONDS = 8
#: Longer than any run: a POST to the slow CRM fake never ends while it is measured.
SLOW_CRM_DELAY = 600.0
SETTINGS = ("floor", "ingest alone", "with delivery")
ThreadCPU = Callable[[int], dict[str, float]]


@dataclass
class Run:
    """One wrk run: its req/s and the CPU seconds used meanwhile, by process and thread."""

    rps: float
    requests: int
    cpu: Mapping[str, Mapping[str, float]]  # process -> thread ("event loop", ...) -> seconds


def cpu_used(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """CPU seconds used between two `thread_cpu` readings of each process, thread by
    thread; a thread gone by the second reading is left out (its time is lost with it)."""
    return {
        process: {name: seconds - before[process].get(name, 0.0) for name, seconds in now.items()}
        for process, now in after.items()
    }


def summary(runs: Mapping[str, Sequence[Run]]) -> list[str]:
    """The probe's table: per setting, median req/s, its ratio to the floor's median, and
    the median CPU per webhook (us) of the event loop, the other threads, and delivery."""
    floor = statistics.median(run.rps for run in runs["floor"])
    lines = [
        f"{'setting':14} {'req/s':>7} {'x floor':>8} {'event loop':>11} {'other threads':>14}"
        f" {'delivery':>9}   (CPU us per webhook)"
    ]
    for setting in SETTINGS:
        done = runs.get(setting, [])
        if not done:
            continue

        def per_webhook(part: str, done: Sequence[Run] = done) -> float:
            return statistics.median(_part(run, part) / run.requests * 1e6 for run in done)

        rps = statistics.median(run.rps for run in done)
        lines.append(
            f"{setting:14} {rps:7.0f} {rps / floor:7.2f}x {per_webhook('loop'):11.0f}"
            f" {per_webhook('others'):14.0f} {per_webhook('delivery'):9.0f}"
        )
    return lines


def _part(run: Run, part: str) -> float:
    if part == "delivery":
        return sum(run.cpu.get("delivery", {}).values())
    threads = run.cpu.get("http") or run.cpu.get("all") or {}
    if part == "loop":
        return threads.get("event loop", 0.0)
    return sum(seconds for name, seconds in threads.items() if name != "event loop")


def ingest_alone() -> None:
    from bench.probes import roles, thread_cpu  # the probes' module imports this one

    runs: dict[str, list[Run]] = {setting: [] for setting in SETTINGS}
    with _servers() as (work, floor, crm, slow):
        for repetition in range(REPETITIONS):
            for setting in SETTINGS:
                tag = f"{setting[:5]}{repetition}"
                if setting == "floor":
                    pids = {"all": floor.popen.pid}
                    runs[setting].append(_measure(floor, pids, tag, thread_cpu))
                    continue
                rundir = work / tag.replace(" ", "-")
                rundir.mkdir()
                target = slow if setting == "ingest alone" else crm
                with c.gateway(c.chatapi_to_crm(rundir, target.url), rundir) as gw:
                    runs[setting].append(_measure(gw, roles(gw.popen.pid), tag, thread_cpu))
    print("\n".join(summary(runs)))
    print(
        f"(wrk -c32, {WRK_SECONDS} s, Chat API; medians of {REPETITIONS} alternated runs;"
        " other threads: the store's writer)"
    )


@contextmanager
def _servers() -> Iterator[tuple[Path, c.Proc, c.Proc, c.Proc]]:
    with (
        c.workspace("probe-ingest-alone") as work,
        c.server("floor", work, "--db", str(work / "floor.db")) as floor,
        c.server("crm", work) as crm,
        c.server("crm", work, "--delay", str(SLOW_CRM_DELAY)) as slow,
    ):
        yield work, floor, crm, slow


def _measure(proc: c.Proc, pids: Mapping[str, int], tag: str, thread_cpu: ThreadCPU) -> Run:
    before = {process: thread_cpu(pid) for process, pid in pids.items()}
    result = c.wrk(
        f"{proc.url}/webhooks/wa/{c.CHATAPI_SECRET}",
        WRK / "chatapi.lua",
        connections=32,
        seconds=WRK_SECONDS,
        args=[tag, str(CONVERSATIONS)],
    )
    after = {process: thread_cpu(pid) for process, pid in pids.items()}
    return Run(result.rps, result.requests, cpu_used(before, after))
