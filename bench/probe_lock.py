"""`python -m bench.probes write-lock`: how the HTTP and delivery processes share the SQLite
store's write lock under `wrk -c32` (Chat API, benchmark 1's load).

Every write transaction of either process holds `<db>.writer` (`sqlite_locks.WriterLock`,
an `flock`) from `BEGIN IMMEDIATE` to `COMMIT`, so the share of the time it is held bounds
ingest once delivery runs beside it. `perf` records the two processes' `flock` system calls
(kernel tracepoints: nothing added to the gateway, little to its cost) and this prints, per
process, its transactions a second, the share of the time it held the lock, the share it
waited for it, and the mean hold. Needs `perf` (Debian's `linux-perf`) and root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bench import common as c
from bench.b_ingest import CONVERSATIONS, WRK

LOCK_EX, LOCK_UN = 2, 8
RECORD_SECONDS = 4.0
_LINE = re.compile(
    r"\s*\S+\s+(?P<tid>\d+)\s+\[\d+\]\s+(?P<at>[\d.]+):\s+syscalls:sys_(?P<way>enter|exit)_flock:"
    r"(?:\s+fd: (?P<fd>0x[0-9a-f]+), cmd: (?P<cmd>0x[0-9a-f]+))?"
)


@dataclass
class LockUse:
    transactions: int = 0
    held: float = 0.0
    waited: float = 0.0


def lock_use(lines: Iterable[str], writer_fds: dict[int, int]) -> dict[int, LockUse]:
    """Per thread id (`writer_fds`: the `.writer` descriptor of each thread's process,
    keyed by thread id), the lock's use read from `perf script`'s flock events."""
    uses: dict[int, LockUse] = {}
    asked: dict[int, float] = {}  # thread -> when it called flock(LOCK_EX)
    taken: dict[int, float] = {}  # thread -> when it got the lock
    pending: dict[int, int] = {}  # thread -> the cmd of the call under way
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue
        tid, at = int(match["tid"]), float(match["at"])
        if tid not in writer_fds:
            continue
        if match["way"] == "enter":
            if int(match["fd"], 16) != writer_fds[tid]:
                pending.pop(tid, None)
                continue
            cmd = int(match["cmd"], 16) & (LOCK_EX | LOCK_UN)
            pending[tid] = cmd
            if cmd == LOCK_EX:
                asked[tid] = at
            elif cmd == LOCK_UN and tid in taken:
                use = uses.setdefault(tid, LockUse())
                use.held += at - taken.pop(tid)
                use.transactions += 1
        elif pending.pop(tid, None) == LOCK_EX and tid in asked:
            taken[tid] = at
            uses.setdefault(tid, LockUse()).waited += at - asked.pop(tid)
    return uses


def _writer_fd(pid: int) -> int:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".writer"):
                return int(fd)
        except OSError:
            continue
    raise RuntimeError(f"process {pid} has no .writer lock file open")


def write_lock() -> None:
    from bench.probes import roles  # the probes' module imports this one

    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("no perf here (apt-get install linux-perf)")
    with c.workspace("probe-write-lock") as work, c.server("crm", work) as crm:
        settings = c.chatapi_to_crm(work, crm.url)
        with c.gateway(settings, work) as gw:
            pids = roles(gw.popen.pid)
            fds = {role: _writer_fd(pid) for role, pid in pids.items()}
            role_of = {
                int(tid): role
                for role, pid in pids.items()
                for tid in os.listdir(f"/proc/{pid}/task")
            }
            writer_fds = {tid: fds[role] for tid, role in role_of.items()}
            load: dict[str, c.WrkResult] = {}
            url = f"{gw.url}/webhooks/wa/{c.CHATAPI_SECRET}"
            args = ["probe", str(CONVERSATIONS)]
            wrk = threading.Thread(
                target=lambda: load.update(
                    result=c.wrk(url, WRK / "chatapi.lua", connections=32, seconds=8, args=args)
                )
            )
            wrk.start()
            time.sleep(2.0)  # past wrk's start
            data = work / "perf.data"
            events = ["-e", "syscalls:sys_enter_flock", "-e", "syscalls:sys_exit_flock"]
            subprocess.run(  # noqa: S603 (fixed arguments)
                [perf, "record", "-q", *events, "-p", ",".join(map(str, pids.values())),
                 "-o", str(data), "--", "sleep", str(RECORD_SECONDS)],
                check=True, capture_output=True,
            )  # fmt: skip
            wrk.join()
            script = subprocess.run(  # noqa: S603
                [perf, "script", "-i", str(data)], check=True, capture_output=True, text=True
            ).stdout
    uses = lock_use(script.splitlines(), writer_fds)
    print(f"gateway: {load['result'].rps:.0f} req/s under wrk -c32 (Chat API)")
    print(f"{'process':10} {'txn/s':>7} {'lock held':>10} {'waited':>8} {'mean hold':>10}")
    for role in pids:
        use = LockUse()
        for tid, one in uses.items():
            if role_of[tid] == role:
                use.transactions += one.transactions
                use.held += one.held
                use.waited += one.waited
        mean = use.held / use.transactions * 1e3 if use.transactions else 0.0
        print(
            f"{role:10} {use.transactions / RECORD_SECONDS:7.0f} "
            f"{use.held / RECORD_SECONDS:10.1%} {use.waited / RECORD_SECONDS:8.1%} "
            f"{mean:8.2f} ms"
        )
