"""Store contract: the customer's order among what is not yet delivered.

A customer message that arrives after newer messages of its conversation that still wait
(a webhook redelivered after an outage) is handed out ahead of them, by the provider's
timestamp (the `timestamp` of the message a send job carries; ties keep arrival order). It
never goes ahead of a job already handed out or possibly sent, and leases still end when
what they handed out is done. Mixed into `StoreContract`.
"""

from __future__ import annotations

from typing import Any

from gateway.store.base import Finished, Job, NewJob, Store
from gateway.store.contract_data import LEASE, NOW


def message(name: str, at: float, lane: str = "chat-1") -> NewJob:
    event = {"kind": "message", "native_id": name, "timestamp": at}
    return NewJob("send", "route-1", "channel", "crm", lane, {"event": event, "name": name})


def names(jobs: list[Job]) -> list[Any]:
    return [job.payload["name"] for job in jobs]


class OrderContract:
    async def test_a_late_older_message_goes_ahead_of_newer_waiting_ones(
        self, store: Store
    ) -> None:
        await store.enqueue([message("m3", 30), message("m4", 40)], NOW)
        await store.enqueue([message("m1", 10)], NOW + 1)  # redelivered late
        await store.enqueue([message("m2", 20), message("m4b", 40)], NOW + 2)
        claimed = await store.claim("crm", "w1", 10, LEASE, NOW + 3)
        assert names(claimed) == ["m1", "m2", "m3", "m4", "m4b"]  # ties: arrival order

    async def test_jobs_without_a_timestamp_keep_their_place(self, store: Store) -> None:
        ack = NewJob("ack", "route-1", "crm", "crm", "chat-1", {"name": "ack"})
        await store.enqueue([message("m2", 20), ack, message("m3", 30)], NOW)
        await store.enqueue([message("m1", 10)], NOW + 1)
        claimed = await store.claim("crm", "w1", 10, LEASE, NOW + 2)
        assert names(claimed) == ["m1", "m2", "ack", "m3"]

    async def test_a_late_message_never_goes_ahead_of_what_was_handed_out(
        self, store: Store
    ) -> None:
        await store.enqueue([message("m2", 20), message("m3", 30)], NOW)
        first = await store.claim("crm", "w1", 1, LEASE, NOW + 1)
        assert names(first) == ["m2"]
        await store.enqueue([message("m1", 10)], NOW + 2)  # m2 may be at the CRM already
        await store.finish([Finished(first[0].id)], "w1", NOW + 3)
        rest = await store.claim("crm", "w1", 10, LEASE, NOW + 4)
        assert names(rest) == ["m1", "m3"]

    async def test_nor_ahead_of_a_job_possibly_sent_by_a_dead_worker(self, store: Store) -> None:
        await store.enqueue([message("m2", 20), message("m3", 30)], NOW)
        [m2] = await store.claim("crm", "w1", 1, LEASE, NOW + 1)
        await store.release("w1", [m2.lane], NOW + 2)  # a restart frees it, the mark stays
        await store.enqueue([message("m1", 10)], NOW + 3)
        again = await store.claim("crm", "w2", 10, LEASE, NOW + 4)
        assert names(again) == ["m2", "m1", "m3"]

    async def test_a_lease_ends_when_its_jobs_are_done_though_one_was_placed_ahead(
        self, store: Store
    ) -> None:
        await store.enqueue([message("m2", 20), message("m3", 30)], NOW)
        claimed = await store.claim("crm", "w1", 10, LEASE, NOW + 1)
        await store.enqueue([message("m1", 10)], NOW + 2)  # behind the handed-out prefix
        await store.finish([Finished(job.id) for job in claimed], "w1", NOW + 3)
        assert names(await store.claim("crm", "w2", 10, LEASE, NOW + 4)) == ["m1"]

    async def test_a_retried_late_message_blocks_the_newer_ones_behind_it(
        self, store: Store
    ) -> None:
        await store.enqueue([message("m2", 20)], NOW)
        await store.enqueue([message("m1", 10)], NOW + 1)
        m1, m2 = await store.claim("crm", "w1", 10, LEASE, NOW + 2)
        assert names([m1, m2]) == ["m1", "m2"]
        await store.retry(m1.id, "w1", NOW + 60, "503", NOW + 3)
        assert await store.claim("crm", "w2", 10, LEASE, NOW + 4) == []
        assert names(await store.claim("crm", "w2", 10, LEASE, NOW + 60)) == ["m1", "m2"]
