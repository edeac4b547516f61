"""The `gateway dead-letters` and `gateway replay` commands: parked jobs read and made ready
again from the command line, also beside a running gateway on PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.logs import Redactor
from gateway.settings import load_settings, secret_values
from gateway.store.base import Job, Store

EXIT_OK = 0
_T = TypeVar("_T")


def open_store(url: str) -> Store:
    # Imported when used: the store package pulls in its backends. `tool=True`: these
    # commands work beside a running gateway without taking its single-process lock.
    opener: Callable[..., Store] = importlib.import_module("gateway.store").open_store
    return opener(url, tool=True)


async def using_store(url: str, action: Callable[[Store], Awaitable[_T]]) -> _T:
    store = open_store(url)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


#: The dead-letter table cuts reasons here; `--wide` shows them whole.
REASON_WIDTH = 80


def cmd_dead_letters(args: argparse.Namespace) -> int:
    settings = load_settings(args.settings)
    jobs: list[Job] = asyncio.run(
        using_store(
            settings.store_url,
            lambda s: s.dead_letters(
                limit=args.limit, destination=args.destination, lane=args.lane
            ),
        )
    )
    redactor = Redactor(secret_values(settings, {}))
    if args.json:
        print(json.dumps([redactor.scrub(dataclasses.asdict(job)) for job in jobs], indent=2))
        return EXIT_OK
    if not jobs:
        print("no dead letters")
        return EXIT_OK
    if args.wide:
        for job in jobs:
            _print_dead_letter(job, redactor)
        print(f"{len(jobs)} dead letter(s); `gateway replay --job ID` makes them ready again")
        return EXIT_OK
    header = ("ID", "DEAD SINCE (UTC)", "ATTEMPTS", "DESTINATION", "ROUTE", "LANE", "ERROR")
    cut = False
    rows: list[tuple[str, ...]] = [header]
    for job in jobs:
        reason = redactor.redact(" ".join((job.last_error or "-").split()))
        cut = cut or len(reason) > REASON_WIDTH
        shown = reason if len(reason) <= REASON_WIDTH else reason[: REASON_WIDTH - 1] + "…"
        replayed = f" (replays {job.replay_of})" if job.replay_of else ""
        first = (str(job.id) + replayed, _when(job.dead_at), str(job.attempts))
        rows.append((*first, job.destination, job.route, job.lane, shown))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
    if cut:
        print("(reasons cut at 80 characters: `gateway dead-letters --wide` shows them whole)")
    print(f"{len(jobs)} dead letter(s); `gateway replay --job ID` makes them ready again")
    return EXIT_OK


def _print_dead_letter(job: Job, redactor: Redactor) -> None:
    """One dead letter as a block, every field whole (`gateway dead-letters --wide`)."""
    print(f"job {job.id}" + (f" (replays job {job.replay_of})" if job.replay_of else ""))
    for label, value in (
        ("dead since", _when(job.dead_at) + " UTC"),
        ("attempts", str(job.attempts)),
        ("destination", job.destination),
        ("route", job.route),
        ("lane", job.lane),
        ("reason", redactor.redact(job.last_error or "-")),
    ):
        print(f"  {label + ':':<13}{value}")
    print()


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args.settings)
    pairs: list[tuple[int, int]] = asyncio.run(
        using_store(
            settings.store_url,
            lambda s: s.replay_jobs(
                job_ids=args.job or (),
                lane=args.lane,
                since=args.since,
                until=args.until,
                now=time.time(),
            ),
        )
    )
    if args.json:
        jobs = [{"job": old, "new_job": new} for old, new in pairs]
        print(json.dumps({"replayed": len(pairs), "jobs": jobs}))
        return EXIT_OK
    for old, new in pairs:
        print(f"replayed job {old} as job {new}")
    print(f"replayed {len(pairs)} dead letter(s); the gateway delivers them when it runs")
    return EXIT_OK
