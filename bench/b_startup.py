"""Benchmark 6: `gateway run` until `/readyz` answers 200, with 1,000 portals configured.

"1,000 portals configured": the Bitrix24 app installed on 1,000 portals (their records in
the store), each with an open line linked to its own WhatsApp number: 1,000 channel
instances in settings.toml and 1,000 routes in the store. Timed from the process spawn to
the first 200 of `/readyz` (polled every 5 ms), beside the same for a minimal settings file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import common as c
from bench.b_ingest import portal_record, seed_b24

PORTALS = 1000


def _b24() -> dict[str, Any]:
    return {
        "provider": "bitrix24",
        "client_id": "app.573ad8a0346747.09223434",
        "client_secret": "fake-client-secret",
    }


def _channel(index: int) -> dict[str, Any]:
    return {"provider": "test-channel", "base_url": "http://127.0.0.1:9", "token": f"t{index}"}


def _prepare(rundir: Path, portals: int) -> Path:
    rundir.mkdir()
    channels = {f"wa{i}": _channel(i) for i in range(max(1, portals))}
    settings = c.write_settings(rundir, channels=channels, crms={"b24": _b24()}, routes={})
    records = [
        portal_record(f"https://portal{i}.bitrix24.com/rest/", member_id=f"member{i:06d}")
        for i in range(portals)
    ]
    routes = [(f"line{i}", f"wa{i}", f"member{i:06d}/1") for i in range(portals)]
    seed_b24(rundir / "gateway.db", records, routes)
    return settings


def _time_to_ready(settings: Path, rundir: Path) -> float:
    port = c.free_port()
    started = time.perf_counter()
    proc = c.spawn(
        "gateway", ["-m", "gateway", "run", "--settings", str(settings), "--port", str(port)],
        port, rundir,
    )  # fmt: skip
    try:
        c.wait_http(proc, "/readyz", timeout=60, ok=200)
        return time.perf_counter() - started
    finally:
        proc.stop()


def startup(quick: bool = False) -> dict[str, Any]:
    reps = 3
    runs: list[dict[str, float]] = []
    with c.workspace("startup") as work:
        minimal = _prepare(work / "minimal", 0)
        large = _prepare(work / "large", PORTALS)
        for _ in range(reps):
            runs.append(
                {
                    "minimal_s": _time_to_ready(minimal, work / "minimal"),
                    "portals_s": _time_to_ready(large, work / "large"),
                }
            )
    return {
        "runs": runs,
        "portals_s": c.summary([r["portals_s"] for r in runs]),
        "minimal_s": c.summary([r["minimal_s"] for r in runs]),
        "setup": f"{PORTALS} portals in the store, {PORTALS} channel instances in settings, "
        f"{PORTALS} stored routes; {reps} repetitions alternating with a minimal settings file",
    }
