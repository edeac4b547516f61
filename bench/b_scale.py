"""Benchmark 5: the cost per message with a large store, against a small one, same run.

The large store holds 1,000 installed Bitrix24 portals (records of the `b24` instance) and
100,000 conversations, each with 3 delivered messages: their events (dedupe keys) and id
map rows. The small one holds 100 conversations. For each, alternately:

* delivery: a backlog of queued messages over the store's conversations is put in the
  store before `gateway run` starts; the rate is measured where they land (the `crm` fake).
* ingest: wrk loads the Chat API webhook over the store's conversations (delivery runs).

Also the gateway's peak RSS (VmHWM) with the large store.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from bench import common as c
from bench.b_ingest import WRK, portal_record

PER_CONVERSATION = 3
BACKLOG = 5000


def _conversation(index: int) -> str:
    return f"7999{index:07d}@c.us"


def seed(db: Path, conversations: int, portals: int) -> None:
    """Schema through the store, bulk rows straight through SQLite (minutes otherwise)."""
    from gateway.store.sqlite import SQLiteStore

    async def migrate() -> None:
        store = SQLiteStore(str(db))
        await store.open()
        await store.close()

    asyncio.run(migrate())
    now = time.time()
    connection = sqlite3.connect(db)
    with connection:
        connection.executemany(
            "INSERT INTO kv (namespace, key, value) VALUES ('instance:b24', ?, ?)",
            (
                (
                    f"portal:member{p:06d}",
                    orjson.dumps(
                        portal_record(
                            f"https://portal{p}.bitrix24.com/rest/", member_id=f"member{p:06d}"
                        )
                    ),
                )
                for p in range(portals)
            ),
        )
        events = (
            (
                "wa",
                f"chatapi:{c.CHATAPI_INSTANCE}:old_{conv}_{n}",
                orjson.dumps({"event": {"kind": "message", "text": "old"}, "target": None}),
                now,
            )
            for conv in range(conversations)
            for n in range(PER_CONVERSATION)
        )
        connection.executemany(
            "INSERT INTO events (instance, dedupe_key, event, received_at) VALUES (?, ?, ?, ?)",
            events,
        )
        maps = (
            (
                "main",
                "wa",
                f"old_{conv}_{n}",
                "crm",
                f"crm-old-{conv}-{n}",
                _conversation(conv),
                b"{}",
                now,
            )
            for conv in range(conversations)
            for n in range(PER_CONVERSATION)
        )
        connection.executemany(
            "INSERT INTO id_map (route, source, source_id, destination, destination_id,"
            " conversation_id, extra, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            maps,
        )
    connection.close()


def backlog(db: Path, conversations: int, count: int, tag: str) -> None:
    """`count` messages queued for delivery through the real planning and store code."""
    from gateway.models import InboundEvent, Message, Sender
    from gateway.planning import plan
    from gateway.providers import Route
    from gateway.store.sqlite import SQLiteStore

    route = Route(name="main", channel="wa", crm="crm", target=None, direction="both")

    async def fill() -> None:
        store = SQLiteStore(str(db))
        await store.open()
        try:
            step = max(1, conversations // count) if conversations > count else 1
            items = []
            for i in range(count):
                chat = _conversation((i * step) % conversations)
                message = Message(
                    conversation_id=chat,
                    native_id=f"{tag}-{i}",
                    sender=Sender(id=chat, name="Customer"),
                    text=f"m{i}",
                )
                key = f"chatapi:{c.CHATAPI_INSTANCE}:{tag}-{i}"
                items.append(plan("wa", InboundEvent(key, message), [route]))
            for first in range(0, len(items), 500):
                await store.ingest(items[first : first + 500], time.time())
        finally:
            await store.close()

    asyncio.run(fill())


def _settings(rundir: Path, crm_url: str) -> Path:
    return c.write_settings(
        rundir,
        channels={"wa": c.chatapi_channel()},
        crms={
            "crm": c.test_crm(crm_url),
            "b24": {
                "provider": "bitrix24",
                "client_id": "app.573ad8a0346747.09223434",
                "client_secret": "fake-client-secret",
            },
        },
        routes={"main": {"channel": "wa", "crm": "crm"}},
    )


def _run(
    seeded: Path, rundir: Path, crm: c.Proc, conversations: int, seconds: int
) -> dict[str, Any]:
    rundir.mkdir()
    shutil.copy(seeded, rundir / "gateway.db")
    backlog(rundir / "gateway.db", conversations, BACKLOG, rundir.name)
    c.post_json(crm.url + "/_reset", {})
    settings = _settings(rundir, crm.url)
    with c.gateway(settings, rundir) as gw:
        c.received(crm, BACKLOG, 120.0)
        received = c.get_json(crm.url + "/_records")["received"]
        times = sorted(at for _conv, _text, at in received)
        drain = BACKLOG / (times[-1] - times[0])
        ingest = c.wrk(
            gw.url + f"/webhooks/wa/{c.CHATAPI_SECRET}",
            WRK / "chatapi.lua",
            connections=32,
            seconds=seconds,
            args=[rundir.name, str(conversations)],
        )
        rss = gw.rss_peak_mb()
    return {
        "delivery_rate": drain,
        "delivery_us_per_msg": 1e6 / drain,
        "ingest_rps": ingest.rps,
        "ingest_us_per_msg": 1e6 / ingest.rps,
        "ingest_p99_ms": ingest.latency_ms.get("p99"),
        "rss_peak_mb": rss,
        "delivered": len(received),
    }


def scale(quick: bool = False) -> dict[str, Any]:
    big_conversations = 10_000 if quick else 100_000
    portals = 1000
    reps, seconds = 3, (4 if quick else 6)
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with c.workspace("scale") as work, c.server("crm", work) as crm:
        small_db, large_db = work / "small.db", work / "large.db"
        started = time.perf_counter()
        seed(small_db, 100, portals)
        seed(large_db, big_conversations, portals)
        seeding = time.perf_counter() - started
        for rep in range(reps):
            runs["small"].append(_run(small_db, work / f"small{rep}", crm, 100, seconds))
            runs["large"].append(
                _run(large_db, work / f"large{rep}", crm, big_conversations, seconds)
            )
        size_mb = large_db.stat().st_size / 1e6
    ratios_ingest = [
        large["ingest_us_per_msg"] / small["ingest_us_per_msg"]
        for small, large in zip(runs["small"], runs["large"], strict=True)
    ]
    ratios_delivery = [
        large["delivery_us_per_msg"] / small["delivery_us_per_msg"]
        for small, large in zip(runs["small"], runs["large"], strict=True)
    ]
    return {
        "runs": runs,
        "ingest_cost_ratio": c.summary(ratios_ingest),
        "delivery_cost_ratio": c.summary(ratios_delivery),
        "rss_peak_mb": c.summary([r["rss_peak_mb"] for r in runs["large"]]),
        "large_db_mb": size_mb,
        "seeding_seconds": seeding,
        "setup": f"large: {portals} portals, {big_conversations} conversations x "
        f"{PER_CONVERSATION} messages (events + id map); small: 100 conversations; "
        f"backlog {BACKLOG} per run; wrk -c32 -d{seconds}s; {reps} repetitions, alternating",
    }
