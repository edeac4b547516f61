"""Benchmark 4: latency from webhook accepted to the CRM fake receiving the message.

An open-loop generator (`bench.loadgen`) offers Chat API webhooks at a fixed rate across
100 conversations to `gateway run`; the `crm` fake (test-crm protocol, no rate limit)
stamps each message when it arrives. "Accepted" is the moment the 2xx reached the
generator, so the figure includes nothing of the ingest itself; the figure from the
request leaving is given too. All three processes share the machine's clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from bench import common as c
from bench.loadgen import build_request, open_loop

CONVERSATIONS = 100
#: The light-load rate measured beside the target's 1,000 msg/s.
LIGHT_RATE = 250.0


def chatapi_body(index: int, conversations: int, tag: str) -> bytes:
    chat = f"7999{index % conversations:07d}@c.us"
    item = {
        "id": f"false_{chat}_{tag}_{index}",
        "body": f"m{index}",
        "fromMe": False,
        "self": 0,
        "isForwarded": 0,
        "author": chat,
        "time": 1700000000,
        "chatId": chat,
        "messageNumber": index + 1,
        "type": "chat",
        "senderName": "Customer",
    }
    return orjson.dumps({"instanceId": c.CHATAPI_INSTANCE, "messages": [item]})


def _one(gw: c.Proc, crm: c.Proc, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    count = int(rate * seconds)
    path = f"/webhooks/wa/{c.CHATAPI_SECRET}"
    host = f"127.0.0.1:{gw.port}"
    requests = [
        build_request(host, path, chatapi_body(i, CONVERSATIONS, tag), "application/json")
        for i in range(count)
    ]
    c.post_json(crm.url + "/_reset", {})
    samples = asyncio.run(open_loop("127.0.0.1", gw.port, requests, rate, connections=64))
    # Everything accepted must arrive; wait for the tail (bounded).
    c.received(crm, count, 30.0)
    records = c.get_json(crm.url + "/_records")
    arrived = {text: at for _conv, text, at in records["received"]}
    from_accept, from_send = [], []
    for index, sample in enumerate(samples):
        at = arrived.get(f"m{index}")
        if at is None:
            continue
        from_accept.append(max(0.0, at - sample.answered) * 1000)
        from_send.append((at - sample.sent) * 1000)
    offered = count / (samples[-1].scheduled - samples[0].scheduled) if count > 1 else 0.0
    in_order = all(
        [int(t[1:]) for conv, t, _ in records["received"] if conv == chat]
        == sorted(int(t[1:]) for conv, t, _ in records["received"] if conv == chat)
        for chat in {conv for conv, _, _ in records["received"][:2000]}
    )
    return {
        "offered_rps": offered,
        "messages": count,
        "accepted": sum(1 for s in samples if s.status == 200),
        "received": len(arrived),
        "duplicates": records["duplicates"],
        "in_order": in_order,
        "p50_ms": c.percentile(from_accept, 50),
        "p99_ms": c.percentile(from_accept, 99),
        "p50_from_send_ms": c.percentile(from_send, 50),
        "p99_from_send_ms": c.percentile(from_send, 99),
        "webhook_p99_ms": c.percentile([(s.answered - s.scheduled) * 1000 for s in samples], 99),
    }


def latency(quick: bool = False) -> dict[str, Any]:
    rate, seconds, reps = 1000.0, (5.0 if quick else 15.0), 3
    runs: list[dict[str, Any]] = []
    light: list[dict[str, Any]] = []
    with c.workspace("latency") as work, c.server("crm", work) as crm:
        for rep in range(reps):
            rundir = work / f"rep{rep}"
            rundir.mkdir()
            settings = c.chatapi_to_crm(rundir, crm.url)
            with c.gateway(settings, rundir) as gw:
                runs.append(_one(gw, crm, rate, seconds, f"r{rep}"))
                # The same path at a quarter of the rate: what a message costs when it does
                # not queue behind others (on a machine where 1,000 msg/s is near the
                # gateway's capacity, the figure above is mostly queueing).
                light.append(_one(gw, crm, LIGHT_RATE, seconds, f"l{rep}"))
    return {
        "runs": runs,
        "p50_ms": c.summary([r["p50_ms"] for r in runs]),
        "p99_ms": c.summary([r["p99_ms"] for r in runs]),
        "p99_from_send_ms": c.summary([r["p99_from_send_ms"] for r in runs]),
        "webhook_p99_ms": c.summary([r["webhook_p99_ms"] for r in runs]),
        "light_runs": light,
        "light_p50_ms": c.summary([r["p50_ms"] for r in light]),
        "light_p99_ms": c.summary([r["p99_ms"] for r in light]),
        "lost": sum(r["accepted"] - r["received"] for r in runs + light),
        "duplicates": sum(r["duplicates"] for r in runs + light),
        "setup": f"{rate:.0f} msg/s offered open-loop for {seconds:.0f} s, "
        f"{CONVERSATIONS} conversations, one message per webhook, {reps} repetitions; "
        f"then {LIGHT_RATE:.0f} msg/s on the same gateway",
    }
