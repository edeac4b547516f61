"""Measurements behind the analysis in `bench/notes.md`, one command each.

    python -m bench.probes threads   # CPU per thread of `gateway run` under wrk (Chat API)
    python -m bench.probes httpx     # CPU per httpx POST to the CRM fake
    python -m bench.probes idle      # CPU of an idle `gateway run` with 1,000 channels

They print figures; nothing is written to `bench/results`. Like the benchmarks, they are
figures of one machine at one moment: compare them with each other, not across machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import httpx
import orjson

from bench import common as c
from bench.b_ingest import CONVERSATIONS, WRK
from bench.b_startup import _prepare

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
        settings = c.write_settings(
            work,
            channels={"wa": c.chatapi_channel()},
            crms={"crm": c.test_crm(crm.url)},
            routes={"main": {"channel": "wa", "crm": "crm"}},
        )
        with c.gateway(settings, work) as gw:
            shares: dict[str, float] = {}
            sampler = threading.Thread(
                target=lambda: shares.update(_shares(gw.popen.pid, 6.0)), daemon=True
            )
            sampler.start()
            result = c.wrk(
                f"{gw.url}/webhooks/wa/{c.CHATAPI_SECRET}",
                WRK / "chatapi.lua",
                connections=32,
                seconds=8,
                args=["probe", str(CONVERSATIONS)],
            )
            sampler.join()
    print(f"gateway: {result.rps:.0f} req/s; CPU % of one core per thread: {shares}")
    print("(the busiest other thread is the SQLite store's writer)")


def http_cost() -> None:
    body = orjson.dumps({"items": [{"key": "k", "conversation": "c", "text": "hello"}]})

    async def run(url: str) -> list[float]:
        costs = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:
            for _ in range(3):
                for _ in range(100):  # warm the connection pool
                    await http.post(f"{url}/acks", content=body)
                count, started = 3000, time.process_time()
                for _ in range(count):
                    await http.post(f"{url}/acks", content=body)
                costs.append((time.process_time() - started) / count * 1e6)
        return costs

    with c.workspace("probe-httpx") as work, c.server("crm", work) as crm:
        import uvloop

        costs = uvloop.run(run(crm.url))
    print(f"httpx: {statistics.median(costs):.0f} us of CPU per POST (runs: {costs})")


def idle() -> None:
    with c.workspace("probe-idle") as work:
        settings = _prepare(work / "large", 1000)
        with c.gateway(settings, work / "large") as gw:
            time.sleep(2.0)  # past start-up
            shares = _shares(gw.popen.pid, 10.0)
    print(f"idle gateway, 1,000 channels: CPU % of one core per thread: {shares or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("probe", choices=["threads", "httpx", "idle"])
    args = parser.parse_args()
    {"threads": threads, "httpx": http_cost, "idle": idle}[args.probe]()


if __name__ == "__main__":
    main()
