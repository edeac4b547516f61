"""Scenario 2, outages: each side fails for a while, then recovers; everything arrives, in
order, and the gateway's retries back off instead of hammering the recovering side.

Phases, one after the other, under traffic both ways (Cloud API fake <-> Bitrix24 fake):
portal 503 QUERY_LIMIT_EXCEEDED storm, HTML 502 pages, 500s, an expired access token,
OPERATION_TIME_LIMIT with `operating_reset_at`; Cloud API 503s, HTML 502s, 130429 rate
limits and a read timeout (the ambiguous case: parked, then replayed by an administrator).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.testing.tally import Tally
from tests.reliability.stack import Stack, in_process, replay_parked, served_stack

pytestmark = pytest.mark.anyio

SEND = "imconnector.send.messages"


def _portal_phases(stack: Stack, faults: int) -> list[tuple[str, Callable[[], None]]]:
    portal = stack.portal
    return [
        (
            f"portal 503 QUERY_LIMIT_EXCEEDED x{faults}",
            lambda: portal.faults.fail_next(SEND, kind="503", count=faults),
        ),
        (
            f"portal HTML 502 page x{faults}",
            lambda: portal.faults.fail_next(SEND, kind="html502", count=faults),
        ),
        (f"portal 500 x{faults}", lambda: portal.faults.fail_next(SEND, kind="500", count=faults)),
        ("portal access token expired mid-run", portal.expire_tokens),
        (
            "portal 429 OPERATION_TIME_LIMIT for 1.5 s (operating_reset_at)",
            lambda: portal.faults.block_method(SEND, seconds=1.5),
        ),
    ]


def _whatsapp_phases(stack: Stack, faults: int) -> list[tuple[str, Callable[[], None]]]:
    wa = stack.whatsapp
    return [
        (f"Cloud API HTTP 503 x{faults}", lambda: wa.fail_next(faults, http_status=503)),
        (f"Cloud API HTML 502 x{faults}", lambda: wa.fail_next(faults, html=True)),
        (f"Cloud API 130429 rate limit x{faults}", lambda: wa.fail_next(faults, code=130429)),
        (
            "Cloud API read timeout after accepting (ambiguous)",
            lambda: wa.fail_next(1, timeout=True, after_accept=True),
        ),
        (
            "Cloud API read timeout before accepting (ambiguous)",
            lambda: wa.fail_next(1, timeout=True, after_accept=False),
        ),
    ]


def _max_rate(times: list[float]) -> float:
    """Most calls within any one-second window."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] > 1.0:
            start += 1
        best = max(best, end - start + 1)
    return float(best)


def _bursts(times: list[float], gap: float = 0.5) -> int:
    """Calls grouped into the requests that made them (a batch's sub-calls are ms apart)."""
    count, last = 0, None
    for at in sorted(times):
        if last is None or at - last > gap:
            count += 1
        last = at
    return count


async def run_outages(tmp: Path, *, conversations: int, rounds: int, faults: int) -> Tally:
    tally = Tally("outages")
    tally.extra["faults_per_phase"] = faults
    started = time.monotonic()
    async with served_stack(tmp) as stack, in_process(stack):
        chats = stack.customers(conversations)
        await stack.customers_write(tally, 0, chats)
        await stack.pulse.until(lambda: stack.chats_open(chats), 30)
        n = 1
        rates: dict[str, float] = {}
        phases = _portal_phases(stack, faults) + _whatsapp_phases(stack, faults)
        for name, inject in phases:
            tally.inject(name)
            portal_seen, wa_seen = len(stack.portal.calls), len(stack.whatsapp.calls)
            inject()
            for _ in range(rounds):
                await stack.customers_write(tally, n, chats)
                await asyncio.gather(
                    *(stack.operator_writes(tally, i, c, n) for i, c in enumerate(chats))
                )
                n += 1
            await stack.pulse.until(
                lambda: not (tally.accepted - stack.arrived() - set(stack.parked_keys())), 60
            )
            failed = [c.time for c in stack.portal.calls[portal_seen:] if c.error] + [
                c.at for c in stack.whatsapp.calls[wa_seen:] if c.status is None or c.status >= 400
            ]
            rates[name] = _max_rate(failed)
        await replay_parked(stack, tally)
        stack.count_arrivals(tally)
        tally.extra["most_failed_calls_in_1s"] = max(rates.values())
        # Counted per request: one `batch` may carry several blocked commands at once.
        tally.extra["blocked_calls_during_operation_limit"] = _bursts(
            [c.time for c in stack.portal.calls if c.error == "OPERATION_TIME_LIMIT"]
        )
        # Refused for the expired token, then refreshed through OAuth and delivered.
        tally.extra["expired_token_answers"] = sum(
            1 for c in stack.portal.calls if c.error == "expired_token"
        )
    tally.extra["seconds"] = round(time.monotonic() - started, 1)
    return tally


def _check(tally: Tally) -> None:
    tally.assert_clean()
    assert tally.accepted == set(tally.conversation_of)
    # Backoff, not hammering: a client retrying at once would make hundreds of calls a second.
    limit = max(30, tally.extra["faults_per_phase"] + 10)
    assert tally.extra["most_failed_calls_in_1s"] <= limit, tally.summary()
    # operating_reset_at honoured: the blocked method is not called again before the reset.
    assert tally.extra["blocked_calls_during_operation_limit"] <= 2, tally.summary()
    assert tally.extra["expired_token_answers"] >= 1, tally.summary()


async def test_outages_short(tmp_path: Path) -> None:
    tally = await run_outages(tmp_path, conversations=3, rounds=1, faults=4)
    print(tally.summary())
    _check(tally)


@pytest.mark.chaos
@pytest.mark.parametrize("conversations", [20])
async def test_outages_chaos(tmp_path: Path, conversations: int) -> None:
    tally = await run_outages(tmp_path, conversations=conversations, rounds=5, faults=30)
    print(tally.write(), tally.summary())
    _check(tally)
