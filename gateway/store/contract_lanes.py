"""Store contract: claims lease lanes and hand out their jobs in order; finishing frees them.
Mixed into `StoreContract`.
"""

from __future__ import annotations

import anyio

from gateway.store.base import Finished, Job, Store
from gateway.store.contract_data import LEASE, NOW, ids, job, mapping


class LanesContract:
    # claim and lanes -------------------------------------------------------------------
    async def test_claim_hands_out_each_lane_as_a_prefix_in_id_order(self, store: Store) -> None:
        new = await store.enqueue([job("a", 0), job("b", 0), job("a", 1), job("b", 1)], NOW)
        assert ids(await store.claim("crm", "w1", 10, LEASE, NOW)) == new

    async def test_claim_limit_cuts_in_id_order_and_leaves_lanes_without_jobs_free(
        self, store: Store
    ) -> None:
        a0, a1, _a2, b0 = await store.enqueue([job("a"), job("a"), job("a"), job("b")], NOW)
        assert ids(await store.claim("crm", "w1", 2, LEASE, NOW)) == [a0, a1]
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW)) == [b0]

    async def test_claim_serves_only_its_destination(self, store: Store) -> None:
        [_, other] = await store.enqueue([job("a"), job("x", destination="channel")], NOW)
        assert ids(await store.claim("channel", "w1", 10, LEASE, NOW)) == [other]

    async def test_claim_skips_jobs_that_are_not_due(self, store: Store) -> None:
        await store.enqueue([job("a")], NOW)
        assert await store.claim("crm", "w1", 10, LEASE, NOW - 1) == []

    async def test_a_leased_lane_goes_to_nobody_else_until_the_lease_expires(
        self, store: Store
    ) -> None:
        new = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        assert ids(await store.claim("crm", "w1", 10, LEASE, NOW)) == new
        assert await store.claim("crm", "w2", 10, LEASE, NOW + LEASE - 1) == []
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW + LEASE)) == new

    async def test_the_owner_gets_nothing_twice_while_it_holds_the_lane(self, store: Store) -> None:
        await store.enqueue([job("a", 0)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.enqueue([job("a", 1)], NOW)
        assert await store.claim("crm", "w1", 10, LEASE, NOW + 1) == []

    async def test_concurrent_claims_never_share_a_lane(self, store: Store) -> None:
        await store.enqueue([job(f"lane-{n % 20}", n) for n in range(60)], NOW)
        claims: dict[str, list[Job]] = {}

        async def claim(owner: str) -> None:
            claims[owner] = await store.claim("crm", owner, 7, LEASE, NOW)

        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(claim, f"w{n}")
        lanes = [{j.lane for j in jobs} for jobs in claims.values()]
        assert sum(len(s) for s in lanes) == len(set().union(*lanes)) == 20
        handed_out = [j.id for jobs in claims.values() for j in jobs]
        assert len(handed_out) == len(set(handed_out))

    async def test_claim_stays_correct_over_a_large_backlog(self, store: Store) -> None:
        lanes = 1000
        new = await store.enqueue([job(f"lane-{n % lanes}", n) for n in range(100_000)], NOW)
        first = await store.claim("crm", "w1", 100, LEASE, NOW)
        assert ids(first) == new[:100]
        second = await store.claim("crm", "w2", 100, LEASE, NOW)
        assert ids(second) == new[100:200]
        await store.finish([Finished(j.id) for j in first], "w1", NOW)
        third = await store.claim("crm", "w1", 100, LEASE, NOW)
        assert ids(third) == new[200:300]
        assert [s.ready for s in await store.stats(NOW)] == [100_000 - 100]

    # finish ----------------------------------------------------------------------------
    async def test_finish_deletes_jobs_and_frees_the_lane(self, store: Store) -> None:
        a0, a1, a2 = await store.enqueue([job("a", 0), job("a", 1), job("a", 2)], NOW)
        await store.claim("crm", "w1", 2, LEASE, NOW)
        await store.finish([Finished(a0), Finished(a1)], "w1", NOW)
        assert await store.get_job(a0) is None and await store.get_job(a1) is None
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW)) == [a2]

    async def test_a_lane_stays_leased_until_its_claimed_prefix_is_done(self, store: Store) -> None:
        a0, a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        [a2] = await store.enqueue([job("a", 2)], NOW)
        await store.finish([Finished(a0)], "w1", NOW)
        assert await store.claim("crm", "w2", 10, LEASE, NOW) == []
        await store.finish([Finished(a1)], "w1", NOW)
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW)) == [a2]

    async def test_finish_writes_mappings_and_follow_ups(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        ack = job("chat-1", 5, destination="channel", kind="ack")
        await store.finish([Finished(a0, [mapping("s1", "d1")], [ack])], "w1", NOW)
        assert await store.lookup_by_source("route-1", "channel", "s1") == mapping("s1", "d1")
        assert await store.lookup_by_destination("crm", "d1") == mapping("s1", "d1")
        [follow_up] = await store.claim("channel", "w1", 10, LEASE, NOW)
        assert (follow_up.kind, follow_up.lane, follow_up.payload) == ("ack", "chat-1", ack.payload)

    async def test_a_duplicate_mapping_is_ignored(self, store: Store) -> None:
        a0, a1 = await store.enqueue([job("a"), job("a")], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.finish([Finished(a0, [mapping("s1", "d1")])], "w1", NOW)
        await store.finish([Finished(a1, [mapping("s1", "d2")])], "w1", NOW)
        assert await store.lookup_by_source("route-1", "channel", "s1") == mapping("s1", "d1")
        assert await store.lookup_by_destination("crm", "d2") is None

    async def test_unknown_lookups_find_nothing(self, store: Store) -> None:
        assert await store.lookup_by_source("route-1", "channel", "nope") is None
        assert await store.lookup_by_destination("crm", "nope") is None

    async def test_a_late_finish_leaves_the_new_owner_alone(self, store: Store) -> None:
        a0, a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        later = NOW + LEASE
        assert ids(await store.claim("crm", "w2", 10, LEASE, later)) == [a0, a1]
        await store.finish([Finished(a0, followups=[job("x", destination="other")])], "w1", later)
        assert await store.claim("crm", "w3", 10, LEASE, later) == []
        await store.finish([Finished(a0, followups=[job("x", destination="other")])], "w2", later)
        await store.finish([Finished(a1)], "w2", later)
        assert await store.destinations_with_work(later) == ["other"]
        assert len(await store.claim("other", "w3", 10, LEASE, later)) == 1

    async def test_finishing_a_batch_across_lanes(self, store: Store) -> None:
        """One finish for jobs of several lanes, one of them finished already: each lane
        moves on to its next job or goes, each finished job is recorded once."""
        a0, a1, b0, c0, c1 = await store.enqueue(
            [job("a", 0), job("a", 1), job("b", 0), job("c", 0), job("c", 1)], NOW
        )
        assert ids(await store.claim("crm", "w1", 10, LEASE, NOW)) == [a0, a1, b0, c0, c1]
        await store.finish([Finished(c0)], "w1", NOW)
        ack = job("chat-9", 9, destination="channel", kind="ack")
        batch = [Finished(b0), Finished(c0), Finished(a0, followups=[ack]), Finished(c1)]
        await store.finish(batch, "w1", NOW)
        # a1 is still out: lane a stays leased; b and c are empty and gone.
        assert await store.claim("crm", "w2", 10, LEASE, NOW) == []
        await store.finish([Finished(a1)], "w1", NOW)
        assert await store.destinations_with_work(NOW) == ["channel"]
        steps = await store.job_history(job_ids=[a0, a1, b0, c0, c1])
        delivered = [s.job_id for s in steps if s.step == "delivered"]
        assert sorted(delivered) == sorted([a0, a1, b0, c0, c1])  # c0 only once

    async def test_finishing_an_unknown_job_does_nothing(self, store: Store) -> None:
        await store.finish([Finished(424242, followups=[job("a")])], "w1", NOW)
        assert await store.claim("crm", "w1", 10, LEASE, NOW) == []

    async def test_finish_tells_when_a_lane_it_frees_has_work_that_came_meanwhile(
        self, store: Store
    ) -> None:
        a0, b0 = await store.enqueue([job("a", 0), job("b", 0)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        [a1] = await store.enqueue([job("a", 1)], NOW)  # a customer's next message
        assert await store.claim("crm", "w2", 10, LEASE, NOW) == []  # lane a is leased
        assert await store.finish([Finished(b0)], "w1", NOW) is False  # b is empty now
        assert await store.finish([Finished(a0)], "w1", NOW) is True
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW)) == [a1]
        assert await store.finish([Finished(a1)], "w2", NOW) is False
        assert await store.finish([], "w2", NOW) is False

    async def test_finish_reports_no_work_while_the_lane_stays_leased(self, store: Store) -> None:
        a0, _a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.enqueue([job("a", 2)], NOW)
        # a1 is still out: the lane stays leased, so nothing is due yet.
        assert await store.finish([Finished(a0)], "w1", NOW) is False
