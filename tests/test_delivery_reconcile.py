"""Sends of unknown outcome to a destination that can be asked whether they landed.

The CRM here cannot dedupe but answers `find_sent` (the recorder's `/find`). A job claimed
with the mark of an earlier attempt is not parked: the destination is asked, and the job is
finished (landed), sent again (not landed), or held, still marked, until it can tell.
Delivery is driven by hand, batch by batch, with the gateway's clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery import Deliverer
from gateway.errors import StoreError
from gateway.outcomes import UNANSWERED_REASON
from gateway.store.base import Finished, Job, Store
from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.recorder import DROP

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
OWNER = "by-hand"
LEASE = 60.0


def settings(tmp_path: Path, settle: float) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"max_attempts": 3},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
        "crms": {
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "crm-token",
                "max_batch": 10,
                "idempotent": False,
                "finds_sent": True,
                "settle_seconds": settle,
            }
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def crm() -> Recorder:
    return Recorder(name="crm")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def h(
    tmp_path: Path, crm: Recorder, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[GatewayHarness]:
    settle = float(getattr(request, "param", 0.0))
    apps = {"channel.test": Recorder(name="channel").app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path, settle), apps=apps) as harness:
        deliverer = harness.gateway.deliverer
        assert deliverer is not None
        await deliverer.stop()  # every claim below is the test's own
        deliverer.clock = clock
        yield harness


def parts(h: GatewayHarness) -> tuple[Store, Deliverer]:
    assert h.gateway.deliverer is not None
    return h.gateway.store, h.gateway.deliverer


async def write(h: GatewayHarness, *texts: str) -> None:
    messages = [{"id": f"m-{t}", "chat": "c1", "from": "c1", "text": t} for t in texts]
    response = await h.client.post(
        "/webhooks/wa", json={"messages": messages}, headers={"Authorization": "Bearer t"}
    )
    assert response.json()["accepted"] == len(texts)


async def claim(store: Store, clock: Clock) -> list[Job]:
    return await store.claim("crm", OWNER, 10, LEASE, clock())


async def crash_after_call(store: Store, deliverer: Deliverer, clock: Clock) -> None:
    """Deliver one batch, then lose its outcome (as if the gateway died after the call)."""
    finish = store.finish

    async def unreachable(finished: Sequence[Finished], owner: str, now: float) -> None:
        store.finish = finish  # type: ignore[method-assign]
        raise StoreError("the gateway died here")

    store.finish = unreachable  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await deliverer.process("crm", await claim(store, clock), OWNER)


async def test_a_send_that_landed_is_recorded_as_delivered_not_sent_again(
    h: GatewayHarness, crm: Recorder, clock: Clock
) -> None:
    store, deliverer = parts(h)
    await write(h, "one", "two")
    await crash_after_call(store, deliverer, clock)
    assert crm.texts() == ["one", "two"]
    jobs = await claim(store, clock)
    assert [j.sending_since is not None for j in jobs] == [True, True]
    await deliverer.process("crm", jobs, OWNER)
    assert crm.texts() == ["one", "two"] and crm.duplicates == 0
    assert await store.dead_letters() == []
    assert ("find", 200) in crm.calls
    # Recorded as delivered: the id map has the destination's ids.
    found = await store.lookup_by_source("main", "wa", "m-one")
    assert found is not None and found.destination_id == crm.received[0].native_id
    metrics = h.gateway.metrics.render()
    assert 'gateway_sends_reconciled_total{destination="crm",landed="yes"} 2' in metrics


async def test_a_send_that_never_left_is_sent_again_once(
    h: GatewayHarness, crm: Recorder, clock: Clock
) -> None:
    store, deliverer = parts(h)
    await write(h, "one", "two")
    await claim(store, clock)  # claimed and marked; the gateway dies before the call
    clock.now += LEASE
    jobs = await claim(store, clock)
    assert [j.sending_since is not None for j in jobs] == [True, True]
    await deliverer.process("crm", jobs, OWNER)
    assert crm.texts() == ["one", "two"] and crm.duplicates == 0
    assert await store.dead_letters() == []


async def test_a_timed_out_send_is_asked_about_and_resent_when_it_did_not_land(
    h: GatewayHarness, crm: Recorder, clock: Clock
) -> None:
    store, deliverer = parts(h)
    await write(h, "one")
    crm.fail_next(status=DROP)  # the connection dies after the request left
    await deliverer.process("crm", await claim(store, clock), OWNER)
    [held] = await claim(store, clock)
    assert held.sending_since is not None
    await deliverer.process("crm", [held], OWNER)
    assert crm.texts() == ["one"] and crm.duplicates == 0
    assert await store.dead_letters() == []


@pytest.mark.parametrize("h", [30.0], indirect=True)
async def test_the_destination_is_asked_only_once_it_has_settled(
    h: GatewayHarness, crm: Recorder, clock: Clock
) -> None:
    store, deliverer = parts(h)
    await write(h, "one", "two")
    began = clock.now
    lanes = [job.lane for job in await claim(store, clock)]  # the gateway dies before the call
    await store.release(OWNER, lanes, clock())  # and its restart frees the lease at once
    clock.now += 5
    await deliverer.process("crm", await claim(store, clock), OWNER)
    assert ("find", 200) not in crm.calls and crm.texts() == []
    clock.now = began + 29
    assert await claim(store, clock) == []  # the lane waits, its jobs still marked
    clock.now = began + 30
    jobs = await claim(store, clock)
    assert [j.sending_since for j in jobs] == [began, began]
    await deliverer.process("crm", jobs, OWNER)
    assert crm.texts() == ["one", "two"] and await store.dead_letters() == []


async def test_no_answer_holds_the_job_marked_and_parks_it_after_the_retries(
    h: GatewayHarness, crm: Recorder, clock: Clock
) -> None:
    store, deliverer = parts(h)
    await write(h, "one")
    await crash_after_call(store, deliverer, clock)
    crm.find_failures = 1
    await deliverer.process("crm", await claim(store, clock), OWNER)
    assert await store.dead_letters() == []
    clock.now += 10
    [held] = await claim(store, clock)
    assert held.sending_since is not None  # still possibly sent
    crm.find_failures = 5
    await deliverer.process("crm", [held], OWNER)  # the third attempt: max_attempts = 3
    [parked] = await store.dead_letters()
    assert parked.last_error is not None
    assert parked.last_error.startswith(UNANSWERED_REASON.split("{")[0])
    assert crm.texts() == ["one"] and crm.duplicates == 0
