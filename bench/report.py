"""docs/performance.md from `bench/results/*.json` and the analysis in `bench/notes.md`."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT

DOC = ROOT / "docs" / "performance.md"
NOTES = ROOT / "bench" / "notes.md"


def _s(stat: dict[str, float], fmt: str = "{:.0f}", unit: str = "") -> str:
    """median (min-max)."""
    median, low, high = (fmt.format(stat[k]) for k in ("median", "min", "max"))
    return f"{median}{unit} ({low} to {high})"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


Row = tuple[str, str, str, str]


def _ingest(r: dict[str, Any], title: str) -> list[Row]:
    ratio_ok = r["ratio"]["median"] >= 0.5
    p99_ok = r["gateway_p99_ms"]["median"] <= 20
    stored = r["missing"] == 0
    return [
        (
            title,
            "≥ 0.5x bare Starlette",
            f"{_s(r['ratio'], '{:.2f}', 'x')}: gateway {_s(r['gateway_rps'])} req/s, "
            f"bare {_s(r['bare_rps'])} req/s",
            _met(ratio_ok),
        ),
        (
            f"{title}: p99 at 32 connections",
            "≤ 20 ms",
            _s(r["gateway_p99_ms"], "{:.1f}", " ms"),
            _met(p99_ok),
        ),
        *_floor(r, title),
        (
            f"{title}: accepted messages in the store",
            "all",
            f"{r['missing']} missing, {r['non_2xx']} non-2xx",
            _met(stored),
        ),
    ]


def _floor(r: dict[str, Any], title: str) -> list[Row]:
    if "floor_ratio" not in r:
        return []
    shares = [run["gateway_rps"] / run["floor_rps"] for run in r["runs"]]
    of_floor = {"median": statistics.median(shares), "min": min(shares), "max": max(shares)}
    return [
        (
            f"{title}: the durable floor (bare endpoint + one write through the gateway's "
            "store, nothing else)",
            "(reference for the 0.5x target)",
            f"{_s(r['floor_ratio'], '{:.2f}', 'x')}: {_s(r['floor_rps'])} req/s, "
            f"p99 {_s(r['floor_p99_ms'], '{:.1f}', ' ms')}",
            "shown",
        ),
        (
            f"{title}: the gateway against its own durable floor",
            "≥ 0.8x",
            _s(of_floor, "{:.2f}", "x"),
            _met(of_floor["median"] >= 0.8),
        ),
    ]


def _delivery(r: dict[str, Any]) -> list[Row]:
    ok = r["rate"]["min"] >= 100 and r["all_in_seconds"]["max"] <= 100
    clean = r["lost"] == 0 and r["duplicated"] == 0 and r["in_order"] and r["dead_letters"] == 0
    one = r["one_call"]
    return [
        (
            "3. Delivery into a rate-limited portal (2 req/s, burst 50)",
            "≥ 100 msg/s, all within 100 s",
            f"{_s(r['rate'], '{:.0f}', ' msg/s')}; all delivered in "
            f"{_s(r['all_in_seconds'], '{:.1f}', ' s')}{_per_request(r)}",
            _met(ok),
        ),
        (
            "3. … lost / duplicated / order / QUERY_LIMIT_EXCEEDED costing a message",
            "0 / 0 / kept / 0",
            f"{r['lost']} / {r['duplicated']} / {'kept' if r['in_order'] else 'BROKEN'} / "
            f"{r['dead_letters']} dead letters ({r['query_limit_exceeded']} 503s answered)",
            _met(clean),
        ),
        (
            "3. … one REST call per message (same fake, `max_batch = 1`)",
            "(reference: ≈ 2 msg/s)",
            f"{one['sustained_rate']:.1f} msg/s after the burst; {one['delivered']} of "
            f"{one['messages']} in {one['window']:.0f} s",
            "shown",
        ),
    ]


def _per_request(r: dict[str, Any]) -> str:
    if "messages_per_request" not in r:
        return ""
    return (
        f"; {r['messages_per_request']['median']:.0f} messages per REST request "
        f"({r['requests']['median']:.0f} requests)"
    )


def _latency(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "4. Latency, webhook accepted → CRM fake, 1,000 msg/s offered: p50",
            "≤ 5 ms",
            _s(r["p50_ms"], "{:.1f}", " ms"),
            _met(r["p50_ms"]["median"] <= 5),
        ),
        (
            "4. … p99",
            "≤ 50 ms",
            f"{_s(r['p99_ms'], '{:.1f}', ' ms')} (from the request leaving: "
            f"{_s(r['p99_from_send_ms'], '{:.0f}', ' ms')}); lost {r['lost']}, "
            f"duplicates {r['duplicates']}",
            _met(r["p99_ms"]["median"] <= 50 and r["lost"] == 0),
        ),
        *_light(r),
    ]


def _light(r: dict[str, Any]) -> list[Row]:
    if "light_p50_ms" not in r:
        return []
    return [
        (
            "4. … the same at 250 msg/s (no queueing: what one message costs)",
            "(reference)",
            f"p50 {_s(r['light_p50_ms'], '{:.1f}', ' ms')}, "
            f"p99 {_s(r['light_p99_ms'], '{:.1f}', ' ms')}; webhook p99 at 1,000 msg/s: "
            f"{_s(r['webhook_p99_ms'], '{:.0f}', ' ms')}",
            "shown",
        )
    ]


def _cpu(r: dict[str, Any]) -> list[Row]:
    from bench.b_cpu import BASELINE_COMMIT, RECORDED

    baseline = r.get("baseline") or {"commit": BASELINE_COMMIT, "same_run": False, **RECORDED}
    rows = []
    for key, title in (
        ("live_us_per_msg", "7. Gateway CPU per delivered message, 250 msg/s of webhooks"),
        ("backlog_us_per_msg", "7. … draining a backlog (delivery alone, 50 per POST)"),
    ):
        if baseline["same_run"]:
            base = float(baseline[key]["median"])
            source = f"{_s(baseline[key], '{:.0f}', ' us')} for {baseline['commit']}, same run"
        else:
            base = float(baseline[key])
            source = f"{base:.0f} us for {baseline['commit']}, recorded on another machine"
        rows.append(
            (
                title,
                "reported; ≤ half the baseline (the code as issue 17 found it)",
                f"{_s(r[key], '{:.0f}', ' us')}: {r[key]['median'] / base:.2f}x the baseline "
                f"({source})",
                _met(r[key]["median"] <= base / 2),
            )
        )
    return rows


def _scale(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "5. Large store (1,000 portals, 100,000 conversations): ingest cost per message",
            "≤ 1.2x small store",
            _s(r["ingest_cost_ratio"], "{:.2f}", "x"),
            _met(r["ingest_cost_ratio"]["median"] <= 1.2),
        ),
        (
            "5. … delivery cost per message",
            "≤ 1.2x small store",
            _s(r["delivery_cost_ratio"], "{:.2f}", "x"),
            _met(r["delivery_cost_ratio"]["median"] <= 1.2),
        ),
        (
            "5. … gateway peak RSS",
            "≤ 250 MB",
            _s(r["rss_peak_mb"], "{:.0f}", " MB"),
            _met(r["rss_peak_mb"]["max"] <= 250),
        ),
    ]


def _startup(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "6. Start-up to `/readyz` 200 with 1,000 portals",
            "≤ 2 s",
            f"{_s(r['portals_s'], '{:.2f}', ' s')} (minimal settings: "
            f"{_s(r['minimal_s'], '{:.2f}', ' s')})",
            _met(r["portals_s"]["median"] <= 2),
        )
    ]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "ingest-chatapi": lambda r: _ingest(r, "1. Chat API webhook ingest"),
    "ingest-bitrix24": lambda r: _ingest(r, "2. Bitrix24 ONIMCONNECTORMESSAGEADD ingest"),
    "delivery-bitrix24": _delivery,
    "latency": _latency,
    "scale": _scale,
    "startup": _startup,
    "delivery-cpu": _cpu,
}


def write_report() -> Path:
    results = {}
    for name in SECTIONS:
        path = RESULTS / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
    lines = [
        "# Performance",
        "",
        "Generated by `python -m bench` (bench/run.py) from `bench/results/*.json`; the "
        "analysis at the end is `bench/notes.md`. Every figure is the **median of 3 "
        "repetitions with its spread (min-max)**, measured side by side in one run on a "
        "shared 2-core machine; nothing here is a timed assertion in the test suite.",
        "",
        "Run everything: `python -m bench` (needs `wrk`: `apt-get install wrk`); one "
        "benchmark: `python -m bench latency`; shorter runs: `--quick`.",
        "",
        "| benchmark | target | measured: median (min-max) | verdict | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, build in SECTIONS.items():
        result = results.get(name)
        if result is None:
            lines.append(f"| {name} | | not run yet | | `python -m bench {name}` |")
            continue
        for title, target, measured, verdict in build(result):
            lines.append(f"| {title} | {target} | {measured} | {verdict} | `{result['command']}` |")
    lines += ["", "## Set-up of each run", ""]
    for name, result in results.items():
        env = result["environment"]
        lines.append(
            f"* **{name}** ({result['date']}, {result['duration_s']} s, Python {env['python']}, "
            f"{env['cpus']} CPUs, {env['wrk']}{', quick' if result['quick'] else ''}): "
            f"{result['setup']}."
        )
    lines += ["", "## Raw repetitions", ""]
    for name, result in results.items():
        lines += [f"### {name}", "", "```json", json.dumps(result["runs"], indent=1), "```", ""]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip(), ""]
    DOC.write_text("\n".join(lines) + "\n")
    return DOC
