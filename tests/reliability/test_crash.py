"""Scenario 1, crash: SIGKILL `gateway run` at random moments under load in both directions.

WhatsApp (Cloud API fake) -> gateway -> Bitrix24 (fake portal) and operator -> WhatsApp,
the gateway a real child process restarted after each kill. The fakes behave as the real
services: Meta re-posts a webhook until it gets a 2xx; the driver re-emits a portal event
that got no 2xx (Bitrix24 itself would not, so a real operator would press "resend").

Counted at the fakes: nothing accepted is lost, nothing arrives twice, order per
conversation holds. Sends to the portal that were in flight at a kill are read back from
their chats (delivered if they landed, sent again if not); replies in flight to the Cloud
API are named by the `sent` status the fake Meta posts (and re-posts after a kill) or, with
none by the channel's `confirm_window`, sent again. Whatever is parked all the same is
counted, and what of it did not land is replayed through the admin API.

With `split=True` the gateway runs as a supervisor with an HTTP process and a delivery
process (`[workers] delivery_process`), and each kill picks one of the two at random; the
supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from gateway.testing.process import GatewayProcess
from gateway.testing.tally import Tally
from tests.reliability.stack import Stack, replay_parked, served_stack, to_toml

pytestmark = pytest.mark.anyio


async def run_crash(
    tmp: Path,
    *,
    conversations: int,
    per_direction: int,
    kills: int,
    seed: int = 6,
    split: bool = False,
) -> Tally:
    """`per_direction` messages per conversation each way; returns the tally."""
    tally = Tally("crash-split" if split else "crash")
    rng = random.Random(seed)
    started = time.monotonic()
    async with served_stack(tmp) as stack:
        # Without `split`, one process: a SIGKILL of `gateway run` must hit the process
        # that delivers, not a supervisor whose children would stop gracefully.
        stack.settings["workers"]["delivery_process"] = split
        settings = tmp / "settings.toml"
        settings.write_text(to_toml(stack.settings))
        process = GatewayProcess(settings, stack.port)
        await process.start()
        try:
            await _drive(stack, process, tally, rng, (conversations, per_direction, kills), split)
            tally.extra["load_seconds"] = round(time.monotonic() - started, 1)
            await _settle_and_replay(stack, tally)
        finally:
            process.stop()
        stack.count_arrivals(tally)
    tally.extra["seconds"] = round(time.monotonic() - started, 1)
    return tally


async def _drive(
    stack: Stack,
    process: GatewayProcess,
    tally: Tally,
    rng: random.Random,
    sizes: tuple[int, int, int],
    split: bool,
) -> None:
    conversations, per_direction, kills = sizes
    up = stack.up
    chats = stack.customers(conversations)
    total = 2 * conversations * per_direction
    opened = asyncio.Event()
    done = asyncio.Event()
    retries = {"webhook": 0, "event": 0}

    async def inbound() -> None:
        for n in range(per_direction):
            # The next round waits for this one's 2xx, so the order the gateway accepts
            # is the order customers wrote.
            retries["webhook"] += await stack.customers_write(tally, n, chats)
            if n == 0:
                await stack.pulse.until(lambda: stack.chats_open(chats), 60)
                opened.set()

    async def outbound(i: int, chat: str) -> None:
        await opened.wait()
        for n in range(per_direction):
            retries["event"] += await stack.operator_writes(tally, i, chat, n)

    async def killer() -> None:
        # Kill points are random numbers of accepted messages, so each kill lands mid-load,
        # with deliveries of the messages accepted so far under way.
        points = sorted(rng.uniform(0.03, 0.9) * total for _ in range(kills))
        for point in points:
            await stack.pulse.until(lambda p=point: len(tally.accepted) >= p or done.is_set(), 300)
            if done.is_set():
                break
            up.clear()
            if split:
                role = rng.choice(["http", "delivery"])
                await process.kill_child(role)
                tally.extra[f"kills_{role}"] = tally.extra.get(f"kills_{role}", 0) + 1
            else:
                process.kill()
                await process.start()
            tally.extra["kills"] = tally.extra.get("kills", 0) + 1
            up.set()

    killing = asyncio.create_task(killer())
    try:
        await asyncio.gather(inbound(), *(outbound(i, c) for i, c in enumerate(chats)))
    finally:
        done.set()
        stack.pulse.event.set()
        await killing
    which = "of the HTTP or the delivery process " if split else ""
    tally.inject(
        f"SIGKILL {which}x{tally.extra.get('kills', 0)} at random points of a {total}-message "
        "load, restart after each"
    )
    tally.extra["webhook_reposts"] = retries["webhook"]
    tally.extra["event_resends"] = retries["event"]


async def _settle_and_replay(stack: Stack, tally: Tally) -> None:
    """Wait until every accepted message arrived or is parked; replay parked ones not landed."""

    def settled() -> bool:
        missing = tally.accepted - stack.arrived()
        return not missing or missing <= set(stack.parked_keys())

    await stack.pulse.until(settled, 120)
    # Replay once the lanes are idle (statuses and acks done): a replay into a lane that a
    # worker holds waits for that lease to run out (see docs/reliability.md).
    await stack.pulse.until(lambda: stack.ready_jobs() == 0, 60)
    await replay_parked(stack, tally)


async def test_crash_short(tmp_path: Path) -> None:
    tally = await run_crash(tmp_path, conversations=4, per_direction=25, kills=2)
    print(tally.summary())
    assert tally.extra.get("kills") == 2
    assert tally.accepted == set(tally.conversation_of)  # every webhook got its 2xx in the end
    tally.assert_clean()


async def test_crash_short_with_a_delivery_process(tmp_path: Path) -> None:
    tally = await run_crash(tmp_path, conversations=4, per_direction=25, kills=4, split=True)
    print(tally.summary())
    # A kill point the load passed while the previous child restarted is skipped.
    assert tally.extra.get("kills", 0) >= 2
    assert tally.accepted == set(tally.conversation_of)
    tally.assert_clean()


async def test_kill_during_delivery_parks_nothing_that_never_arrived(tmp_path: Path) -> None:
    """200 customer messages, one SIGKILL while a delivery request is in flight at the portal
    (processed there, its answer held): the sends of unknown outcome are read back from the
    chats; what landed is recorded, what did not is sent again, nothing waits for a person."""
    tally = Tally("kill-during-delivery")
    async with served_stack(tmp_path) as stack:
        stack.settings["workers"]["delivery_process"] = False  # the SIGKILL hits the sender
        settings = tmp_path / "settings.toml"
        settings.write_text(to_toml(stack.settings))
        process = GatewayProcess(settings, stack.port)
        await process.start()
        try:
            chats = stack.customers(10)
            await stack.customers_write(tally, 0, chats)
            # Every chat has had a message delivered: the portal's chat ids are known.
            await stack.pulse.until(lambda: len(stack.at_portal()) == len(chats), 30)
            stack.portal.faults.fail_next(kind="timeout", delay=3.0)
            for round_ in range(1, 20):
                await stack.customers_write(tally, round_, chats)
            await stack.pulse.until(lambda: len(stack.at_portal()) > len(chats), 30)
            process.kill()  # the request is processed at the portal; its answer never comes
            await process.start()
            await stack.pulse.until(lambda: tally.accepted <= stack.arrived(), 60)
            await stack.pulse.until(lambda: stack.ready_jobs() == 0, 60)
        finally:
            process.stop()
        stack.count_arrivals(tally)
        parked = stack.parked_keys()
        reads = [c for c in stack.portal.calls if c.method == "imopenlines.session.history.get"]
    never_arrived = [key for key in parked if key not in stack.arrived()]
    print(tally.summary(), {"parked": len(parked), "parked_never_arrived": len(never_arrived)})
    assert len(tally.accepted) == 200
    assert never_arrived == []
    assert parked == {}
    assert reads, "the chats were read back"
    tally.assert_clean()


@pytest.mark.chaos
@pytest.mark.parametrize("split", [False, True], ids=["one-process", "delivery-process"])
@pytest.mark.parametrize("messages", [5000])
async def test_crash_chaos(tmp_path: Path, messages: int, split: bool) -> None:
    conversations = 20
    tally = await run_crash(
        tmp_path,
        conversations=conversations,
        per_direction=messages // conversations // 2,
        kills=10,
        split=split,
    )
    path = tally.write()
    print(path, tally.summary())
    assert tally.extra.get("kills", 0) >= (5 if split else 10)
    assert tally.accepted == set(tally.conversation_of)
    tally.assert_clean()
