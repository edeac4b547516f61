"""`python -m bench [--quick] [name ...]`: run benchmarks, write JSON and docs/performance.md.

Each benchmark writes `bench/results/{name}.json`; the report is rebuilt from every result
file present, so running one benchmark refreshes its row and keeps the others. The
analysis in `bench/notes.md` (profiles, before/after) is appended to the report as is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import b_cpu, b_delivery, b_ingest, b_latency, b_scale, b_startup
from bench import common as c
from bench.report import write_report

BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest-chatapi": b_ingest.chatapi,
    "ingest-bitrix24": b_ingest.bitrix24,
    "delivery-bitrix24": b_delivery.delivery,
    "latency": b_latency.latency,
    "delivery-cpu": b_cpu.delivery_cpu,
    "scale": b_scale.scale,
    "startup": b_startup.startup,
}


def _environment() -> dict[str, Any]:
    wrk = subprocess.run(
        ["wrk", "--version"],  # noqa: S607 (wrk from PATH)
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "cpus": __import__("os").cpu_count(),
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="shorter runs, for trying out")
    parser.add_argument("--no-report", action="store_true", help="only write bench/results")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    c.RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python -m bench" + (" --quick" if args.quick else "")
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        result = BENCHMARKS[name](quick=args.quick)
        result["benchmark"] = name
        result["command"] = f"{command} {name}"
        result["quick"] = args.quick
        result["duration_s"] = round(time.perf_counter() - started, 1)
        result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        result["environment"] = _environment()
        (c.RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, default=str), flush=True)
    if not args.no_report:
        path = write_report()
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
