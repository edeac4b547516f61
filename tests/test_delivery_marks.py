"""The attempt mark `claim` puts on every job, and when the deliverer takes it back off.

A job claimed with `sending_since` set is parked as ambiguous by a destination that cannot
recognise a resend, so a mark left on a job that never reached the provider would park it
for nothing. The CRM here cannot dedupe, and delivery is driven by hand, batch by batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery import Deliverer
from gateway.errors import StoreError
from gateway.outcomes import AMBIGUOUS_REASON
from gateway.store.base import Finished, IdMapping, Job, Store
from gateway.testing import GatewayHarness, Recorder, running_gateway

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
OWNER = "by-hand"


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
            }
        },
        "crms": {
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "crm-token",
                "max_batch": 10,
                "idempotent": False,
            }
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def message(msg_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": msg_id, "chat": "c1", "from": "c1", "text": text, **extra}


@pytest.fixture
def crm() -> Recorder:
    return Recorder(name="crm")


@pytest.fixture
async def h(tmp_path: Path, crm: Recorder) -> AsyncIterator[GatewayHarness]:
    apps = {"channel.test": Recorder(name="channel").app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps) as harness:
        assert harness.gateway.deliverer is not None
        await harness.gateway.deliverer.stop()  # every claim below is the test's own
        yield harness


def parts(h: GatewayHarness) -> tuple[Store, Deliverer]:
    assert h.gateway.deliverer is not None
    return h.gateway.store, h.gateway.deliverer


async def write(h: GatewayHarness, *messages: dict[str, Any]) -> None:
    response = await h.client.post(
        "/webhooks/wa", json={"messages": list(messages)}, headers=CHANNEL_AUTH
    )
    assert response.json()["accepted"] == len(messages)


async def claim(store: Store, h: GatewayHarness) -> list[Job]:
    return await store.claim("crm", OWNER, 10, 60.0, h.gateway.clock())


async def marks(store: Store, jobs: list[Job]) -> list[tuple[int, bool]]:
    found = [await store.get_job(job.id) for job in jobs]
    return [(j.attempts, j.sending_since is not None) for j in found if j is not None]


async def test_a_job_cut_from_its_batch_is_unmarked_before_the_call_and_delivered_later(
    h: GatewayHarness, crm: Recorder
) -> None:
    store, deliverer = parts(h)
    gate = crm.hold(lambda item: item["text"] == "one")
    await write(h, message("m1", "one"), message("m2", "two", quote="m1"))
    jobs = await claim(store, h)
    assert len(jobs) == 2
    first = asyncio.create_task(deliverer.process("crm", jobs, OWNER))
    await asyncio.wait_for(crm.holding.wait(), 10)
    # "one" is at the CRM; were the gateway to die now, only "one" would be parked.
    assert await marks(store, jobs) == [(1, True), (0, False)]
    gate.set()
    await first
    [again] = await claim(store, h)  # the lane was released with the batch
    assert (again.id, again.attempts, again.sending_since) == (jobs[1].id, 0, None)
    await deliverer.process("crm", [again], OWNER)
    assert await store.dead_letters() == []
    one = crm.received[0].native_id
    assert [(r.text, r.item["quote"]) for r in crm.received] == [("one", None), ("two", one)]


async def test_a_batch_failing_before_its_call_leaves_its_jobs_unmarked(
    h: GatewayHarness, crm: Recorder
) -> None:
    store, deliverer = parts(h)
    await write(h, message("m0", "first"))
    await deliverer.process("crm", await claim(store, h), OWNER)
    await write(h, message("m1", "re", quote="m0"))
    lookup = store.lookup_by_source

    async def unreachable(route: str, source: str, source_id: str) -> IdMapping | None:
        store.lookup_by_source = lookup  # type: ignore[method-assign]
        raise StoreError("the store went away for a moment")

    store.lookup_by_source = unreachable  # type: ignore[method-assign]
    jobs = await claim(store, h)
    with pytest.raises(StoreError):
        await deliverer.process("crm", jobs, OWNER)  # quoting needs the id map: no call
    [again] = await claim(store, h)
    assert (again.id, again.attempts, again.sending_since) == (jobs[0].id, 0, None)
    await deliverer.process("crm", [again], OWNER)
    assert await store.dead_letters() == []
    assert crm.texts() == ["first", "re"]


async def test_a_batch_failing_after_its_call_keeps_the_mark_of_what_was_sent(
    h: GatewayHarness, crm: Recorder
) -> None:
    store, deliverer = parts(h)
    await write(h, message("m1", "one"), message("m2", "two", quote="m1"))
    finish = store.finish

    async def unreachable(finished: Sequence[Finished], owner: str, now: float) -> None:
        store.finish = finish  # type: ignore[method-assign]
        raise StoreError("the store went away for a moment")

    store.finish = unreachable  # type: ignore[method-assign]
    jobs = await claim(store, h)
    with pytest.raises(StoreError):
        await deliverer.process("crm", jobs, OWNER)
    # "one" arrived but its outcome was not recorded; "two" was cut, never sent.
    assert await marks(store, jobs) == [(1, True), (0, False)]
    await deliverer.process("crm", await claim(store, h), OWNER)
    [parked] = await store.dead_letters()
    assert parked.id == jobs[0].id
    assert parked.last_error == AMBIGUOUS_REASON.format(destination="crm")
    assert crm.texts() == ["one", "two"] and crm.duplicates == 0
