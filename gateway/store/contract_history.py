"""The job-history part of the store contract: what the console's trace and chart read.

Mixed into `StoreContract`; every backend runs it.
"""

from __future__ import annotations

import pytest

from gateway.store.base import Finished, IdMapping, IngestItem, NewJob, Store
from gateway.store.contract_data import LEASE

T0 = 1_700_000_000.0


def send(message: str, conversation: str = "79990001122@c.us") -> NewJob:
    return NewJob(
        kind="send",
        route="main",
        source="wa",
        destination="crm",
        lane=f"main|crm|{conversation}",
        payload={"event": {"native_id": message, "conversation_id": conversation, "text": "hi"}},
    )


class HistoryContract:
    pytestmark = pytest.mark.anyio

    async def test_a_delivered_job_leaves_its_history_behind(self, store: Store) -> None:
        event = {"event": {"native_id": "wamid.1"}}
        await store.ingest([IngestItem("wa", "wa:wamid.1", event, [send("wamid.1")])], T0)
        [claimed] = await store.claim("crm", "w1", 10, LEASE, T0 + 1)
        mapped = IdMapping("main", "wa", "wamid.1", "crm", "b24-7", "79990001122@c.us")
        await store.finish([Finished(claimed.id, mappings=[mapped])], "w1", T0 + 2)
        assert await store.get_job(claimed.id) is None
        [step] = await store.job_history(message="wamid.1")
        assert (step.job_id, step.step, step.at, step.started_at) == (
            claimed.id,
            "delivered",
            T0 + 2,
            T0 + 1,
        )
        assert (step.attempt, step.kind, step.destination, step.created_at) == (
            1,
            "send",
            "crm",
            T0,
        )
        assert step.message == "wamid.1" and step.replay_of is None
        assert await store.job_history(lane_part="79990001122") == [step]
        assert await store.job_history(job_ids=[claimed.id]) == [step]
        assert await store.job_history() == []
        [found] = await store.find_events("wamid.1", since=T0 - 1)
        assert (found.instance, found.dedupe_key, found.received_at) == ("wa", "wa:wamid.1", T0)
        assert await store.find_events("wamid.1", since=T0 + 1) == []

    async def test_retries_parking_and_replays_are_recorded_with_the_new_job(
        self, store: Store
    ) -> None:
        [first] = await store.enqueue([send("m-1")], T0)
        await store.claim("crm", "w1", 10, LEASE, T0 + 1)
        await store.retry(first, "w1", T0 + 5, "502 Bad Gateway", T0 + 2)
        await store.claim("crm", "w1", 10, LEASE, T0 + 5)
        await store.dead_letter(first, "w1", "gave up after 2 attempts", T0 + 6)
        assert [j.id for j in await store.find_jobs("79990001122")] == [first]
        assert [j.id for j in await store.find_jobs("m-1")] == [first]
        assert await store.find_jobs("nothing-like-it") == []
        [(old, new)] = await store.replay_jobs(job_ids=[first], now=T0 + 10)
        assert old == first and new != first
        replayed = await store.get_job(new)
        assert replayed is not None and replayed.replay_of == first
        assert await store.replay(job_ids=[first], now=T0 + 11) == 0  # nothing parked left
        [again] = await store.claim("crm", "w2", 10, LEASE, T0 + 12)
        assert again.id == new and again.replay_of == first
        await store.finish([Finished(new)], "w2", T0 + 13)
        steps = await store.job_history(message="m-1")
        assert [(s.job_id, s.step, s.at) for s in steps] == [
            (first, "retried", T0 + 2),
            (first, "parked", T0 + 6),
            (first, "replayed", T0 + 10),
            (new, "delivered", T0 + 13),
        ]
        assert [s.started_at for s in steps] == [T0 + 1, T0 + 5, None, T0 + 12]
        assert [s.detail for s in steps] == [
            "502 Bad Gateway",
            "gave up after 2 attempts",
            str(new),
            None,
        ]
        assert steps[-1].replay_of == first
        assert await store.prune_events(T0 + 7) == 0
        assert [s.step for s in await store.job_history(message="m-1")] == ["replayed", "delivered"]

    async def test_activity_counts_traffic_and_what_waited(self, store: Store) -> None:
        await store.ingest([IngestItem("wa", "k1", {"n": 1}, [send("a")])], T0 + 10)
        await store.ingest([IngestItem("wa", "k2", {"n": 2}, [send("b", "other")])], T0 + 70)
        [a, b] = await store.claim("crm", "w", 10, LEASE, T0 + 80)
        await store.finish([Finished(a.id)], "w", T0 + 90)
        await store.dead_letter(b.id, "w", "rejected", T0 + 130)
        buckets = await store.activity(T0, 60.0, 3)
        assert [x.start for x in buckets] == [T0, T0 + 60, T0 + 120]
        assert [(x.received, x.delivered, x.parked) for x in buckets] == [
            (1, 0, 0),
            (1, 1, 0),
            (0, 0, 1),
        ]
        assert [x.waiting for x in buckets] == [1, 1, 0]
