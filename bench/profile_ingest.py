"""Profile of the Chat API webhook ingest path, step by step.

    python -m bench.profile_ingest [--seconds 8] [--no-delivery] [--out DIR]

`gateway run` (default settings, Chat API channel routed to the `test-crm` fake) runs
under pyinstrument (`pip install pyinstrument`), loaded by `wrk -c32` with the Chat API
webhook of benchmark 1. pyinstrument samples the event loop's thread: the request path
and delivery share it, the SQLite writer thread is not sampled (`python -m bench.probes
threads` gives its CPU). Printed: the loop's time per step of the request path
(authenticate, parse and validate, plan, commit, answer) and beside it (delivery,
observations, framework), in microseconds per request and as a share of the sampled
time; written: the whole profile as text and as a pyinstrument session in `--out`.

A profiler slows what it samples (pyinstrument by some 20-40% here): read the shares, not
the absolute rate.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import common as c
from bench.b_ingest import CONVERSATIONS, WRK

#: Steps of the request path and what sits beside it, each the outermost frame(s) of
#: these functions (file name ending, function name). Nested matches are not counted twice.
STEPS: dict[str, list[tuple[str, str]]] = {
    "Starlette's route (request object, then the handler)": [("starlette/routing.py", "app")],
    "webhook path (match, the endpoint, errors)": [("gateway/webhook_path.py", "_webhook")],
    "request path (the webhook endpoint, all of it)": [("gateway/webhook_path.py", "serve")],
    "  read the body": [("gateway/bodies.py", "read_body")],
    "  the provider (handle_webhook, all of it)": [
        ("gateway_chatapi/provider.py", "handle_webhook")
    ],
    "  authenticate": [("gateway_chatapi/webhooks.py", "authenticate")],
    "  parse and validate": [
        ("gateway_chatapi/webhooks.py", "decode"),
        ("gateway_chatapi/webhooks.py", "message_events"),
    ],
    "  cursor (messageNumber) stored": [("gateway_chatapi/provider.py", "_advance_cursor")],
    "  ingest (plan, commit, observations)": [("gateway/ingest.py", "__call__")],
    "  plan": [("gateway/planning.py", "plan")],
    "  commit (loop side: rows encoded, hand-off, wait)": [
        ("gateway/store/sqlite.py", "ingest"),
        ("gateway/store/postgres.py", "ingest"),
    ],
    "  observations queued (notify_later)": [("gateway/notify.py", "notify_later")],
    "  answer (JSON body)": [("orjson", "dumps")],
    "delivery (claim, provider call, record)": [("gateway/delivery.py", "_slot")],
    "  httpx (provider POST)": [("httpx/_client.py", "send")],
    "observations, handled after the answer": [("gateway/notify.py", "flush")],
}


def _walk_outermost(frame: Any, wanted: list[tuple[str, str]]) -> Iterable[Any]:
    path = frame.file_path or ""
    if any(frame.function == name and path.endswith(tail) for tail, name in wanted):
        yield frame
        return
    for child in frame.children:
        yield from _walk_outermost(child, wanted)


def step_table(session: Any, requests: int) -> list[tuple[str, float, float]]:
    root = session.root_frame()
    total = root.time if root is not None else 0.0
    rows = []
    for name, wanted in STEPS.items():
        seconds = sum(f.time for f in _walk_outermost(root, wanted)) if root is not None else 0.0
        per_request = seconds / requests * 1e6 if requests else 0.0
        rows.append((name, per_request, seconds / total * 100 if total else 0.0))
    return rows


def child(session_file: str, gateway_args: list[str]) -> int:
    """`gateway run` under pyinstrument in this process; the session saved at its exit."""
    from pyinstrument import Profiler

    from gateway.cli import main as gateway_main

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default
    # handler that would end the process before the profile is saved.
    signal.signal(signal.SIGTERM, stop)
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        return gateway_main(gateway_args)
    finally:
        profiler.stop()
        profiler.last_session.save(session_file)  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else __import__("sys").argv[1:])
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=c.ROOT / "bench" / "results" / "profile")
    args = parser.parse_args(argv)
    from pyinstrument.session import Session

    args.out.mkdir(parents=True, exist_ok=True)
    session_file = args.out / "ingest.pyisession"
    session_file.unlink(missing_ok=True)
    with c.workspace("profile-ingest") as work, c.server("crm", work) as crm:
        settings = c.chatapi_to_crm(work, crm.url)
        port = c.free_port()
        command = ["-m", "bench.profile_ingest", "--child", str(session_file), "run"]
        command += ["--settings", str(settings), "--port", str(port)]
        gw = c.spawn("gateway", command, port, work)
        try:
            c.wait_http(gw, "/readyz", timeout=60, ok=200)
            result = c.wrk(
                f"{gw.url}/webhooks/wa/{c.CHATAPI_SECRET}",
                WRK / "chatapi.lua",
                connections=args.connections,
                seconds=args.seconds,
                args=["profile", str(CONVERSATIONS)],
            )
            time.sleep(1.0)  # let delivery catch up, so its cost is in the profile too
        finally:
            gw.popen.send_signal(signal.SIGTERM)
            gw.popen.wait(timeout=60)
            if not session_file.exists() or not session_file.stat().st_size:
                raise RuntimeError(f"no profile written:\n{gw.log.read_text()[-3000:]}")
    session = Session.load(str(session_file))
    from pyinstrument.renderers import ConsoleRenderer

    text = ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)
    (args.out / "ingest.txt").write_text(text)
    print(f"gateway under pyinstrument: {result.rps:.0f} req/s, {result.requests} requests")
    print(f"p99 {result.latency_ms.get('p99')} ms; profile: {args.out / 'ingest.txt'}")
    print(f"{'step':56} {'us/request':>10} {'% of loop':>9}")
    for name, per_request, share in step_table(session, result.requests):
        print(f"{name:56} {per_request:10.0f} {share:8.1f}%")
    print(f"(sampled wall time {session.duration:.1f} s, pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
