"""Benchmark 3: delivery into a Bitrix24 portal that enforces its leaky bucket.

The fake portal (`gateway_fakes.bitrix24.FakePortal`, 2 requests/s, 50 deep) runs in its own
process; `gateway run` has the Bitrix24 app installed on it and a line linked to a test
channel, with the plugin's default batching (`max_batch = 100` messages per delivery round,
`messages_per_command = 10`: one `batch` of up to 10 `send.messages` commands of 10). 10,000
customer messages over 200 conversations are ingested as fast as the webhook takes them,
and the clock runs until the last one is in the portal's chats. Then the same fake is fed
by a connector making one REST call per message (`max_batch = 1`), for a fixed window, to
show where that design is capped (≈ 2 msg/s once the burst is spent). The whole benchmark
(3 repetitions and the reference) takes about two minutes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench import common as c
from bench.b_ingest import b24_settings, portal_record, seed_b24

CONVERSATIONS = 200
#: A repetition normally ends in about 30 s (100 requests: 50 at once, 50 at 2/s); the
#: limit only stops a stuck run, which then shows as lost messages.
BATCHED_TIMEOUT = 60.0
#: Long enough to spend the burst and measure the rate after it (over the second half).
ONE_CALL_WINDOW = 30.0
ONE_CALL_MESSAGES = 400


def _setup(work: Path, portal: c.Proc, crm: c.Proc, **b24: Any) -> Path:
    tokens = c.get_json(portal.url + "/_tokens")
    settings = b24_settings(work, crm.url, **b24)
    seed_b24(
        work / "gateway.db",
        [portal_record(**tokens)],
        [("line1", "wa", f"{tokens['member_id']}/1")],
    )
    return settings


def _feed(gw: c.Proc, total: int, per_request: int = 100) -> float:
    """Ingest `total` messages, numbered per conversation; returns the seconds it took."""
    started = time.perf_counter()
    counters = [0] * CONVERSATIONS
    with httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer crm-token"}) as http:
        for first in range(0, total, per_request):
            messages = []
            for index in range(first, min(total, first + per_request)):
                conv = index % CONVERSATIONS
                n = counters[conv]
                counters[conv] += 1
                messages.append(
                    {"id": f"m{index}", "chat": f"7999{conv:07d}", "text": f"{conv}-{n}"}
                )
            response = http.post("/webhooks/wa", json={"messages": messages})
            response.raise_for_status()
    return time.perf_counter() - started


def _check(portal: c.Proc, db: Path) -> dict[str, Any]:
    stats = c.get_json(portal.url + "/_stats")
    messages = stats["messages"]
    ids = [external for _chat, _text, external in messages]
    per_chat: dict[str, list[int]] = {}
    for chat, text, _ in messages:
        per_chat.setdefault(chat, []).append(int(text.rsplit("-", 1)[1]))
    in_order = all(numbers == sorted(numbers) for numbers in per_chat.values())
    dead = c.count_rows(db, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
    requests = stats["requests"]
    return {
        "delivered": len(set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "in_order": in_order,
        "requests": requests,
        # What decides the rate under the portal's bucket (a batch counts as one request).
        "messages_per_request": len(ids) / requests if requests else 0.0,
        "query_limit_exceeded": stats["query_limit_exceeded"],
        "portal_errors": stats["errors"],
        "dead_letters": dead,
    }


def _batched(work: Path, total: int, timeout: float) -> dict[str, Any]:
    with c.server("portal", work) as portal, c.server("crm", work) as crm:
        settings = _setup(work, portal, crm)
        with c.gateway(settings, work) as gw:
            started = time.perf_counter()
            feed = _feed(gw, total)
            count = 0
            while time.perf_counter() - started < timeout:
                count = c.get_json(portal.url + "/_stats?count=1")["count"]
                if count >= total:
                    break
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
        result = _check(portal, work / "gateway.db")
    return {
        **result,
        "messages": total,
        "seconds": elapsed,
        "feed_seconds": feed,
        "rate": result["delivered"] / elapsed,
        "lost": total - result["delivered"],
    }


def _one_call(work: Path, total: int, window: float) -> dict[str, Any]:
    with c.server("portal", work) as portal, c.server("crm", work) as crm:
        settings = _setup(work, portal, crm, max_batch=1)
        with c.gateway(settings, work) as gw:
            started = time.perf_counter()
            _feed(gw, total)
            marks = []
            while time.perf_counter() - started < window:
                count = c.get_json(portal.url + "/_stats?count=1")["count"]
                marks.append((time.perf_counter() - started, count))
                time.sleep(0.5)
        result = _check(portal, work / "gateway.db")
    # The rate once the burst is spent: over the second half of the window.
    half = [m for m in marks if m[0] >= window / 2]
    sustained = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    return {**result, "messages": total, "window": window, "sustained_rate": sustained}


def delivery(quick: bool = False) -> dict[str, Any]:
    total = 2000 if quick else 10_000
    reps = 3
    runs = []
    for rep in range(reps):
        with c.workspace(f"delivery{rep}") as work:
            runs.append(_batched(work, total, timeout=BATCHED_TIMEOUT))
    window = ONE_CALL_WINDOW / 2 if quick else ONE_CALL_WINDOW
    with c.workspace("delivery-one-call") as work:
        one_call = _one_call(work, ONE_CALL_MESSAGES, window=window)
    return {
        "runs": runs,
        "rate": c.summary([r["rate"] for r in runs]),
        "all_in_seconds": c.summary([r["seconds"] for r in runs]),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "in_order": all(r["in_order"] for r in runs),
        "query_limit_exceeded": sum(r["query_limit_exceeded"] for r in runs),
        "dead_letters": sum(r["dead_letters"] for r in runs),
        "requests": c.summary([float(r["requests"]) for r in runs]),
        "messages_per_request": c.summary([r["messages_per_request"] for r in runs]),
        "one_call": one_call,
        "setup": f"{total} messages, {CONVERSATIONS} conversations, one portal (2 req/s, "
        f"burst 50), {reps} repetitions, the plugin's defaults (max_batch = 100, "
        f"messages_per_command = 10); one-call mode: {ONE_CALL_MESSAGES} messages, "
        f"max_batch = 1, {window:.0f} s window",
    }
