"""Store contract: which sends may be under way (`Store.sending`), for every process sharing
the store. A claim marks what it hands out; the mark counts until the outcome is recorded,
and only when it is recent enough (`since`). Mixed into `StoreContract`.
"""

from __future__ import annotations

from gateway.store.base import Finished, IdMapping, NewJob, Store
from gateway.store.contract_data import LEASE, NOW


def send(lane: str, destination: str = "wa") -> NewJob:
    return NewJob("send", "route-1", "crm", destination, lane, {"lane": lane})


class SendingContract:
    async def test_sending_counts_claimed_sends_until_their_outcome(self, store: Store) -> None:
        a0, b0, _ = await store.enqueue([send("a"), send("b"), send("c")], NOW)
        assert await store.sending("wa", NOW - 60) == 0  # enqueued, not handed out
        assert len(await store.claim("wa", "w1", 2, LEASE, NOW)) == 2
        assert await store.sending("wa", NOW - 60) == 2
        mapped = IdMapping("route-1", "crm", "m1", "wa", "wa-id-1")
        await store.finish([Finished(a0, mappings=[mapped])], "w1", NOW + 1)
        assert await store.sending("wa", NOW - 60) == 1
        await store.retry(b0, "w1", NOW + 5, "503", NOW + 1)  # failed: not in flight
        assert await store.sending("wa", NOW - 60) == 0

    async def test_sending_leaves_out_old_marks_other_destinations_and_kinds(
        self, store: Store
    ) -> None:
        await store.enqueue([send("a"), send("x", destination="other")], NOW)
        await store.enqueue([NewJob("ack", "route-1", "crm", "wa", "k", {})], NOW)
        await store.claim("wa", "w1", 10, LEASE, NOW)
        await store.claim("other", "w1", 10, LEASE, NOW)
        assert await store.sending("wa", NOW) == 1  # the ack is no send
        assert await store.sending("wa", NOW + 0.5) == 0  # claimed before `since`
        assert await store.sending("nobody", NOW - 60) == 0

    async def test_a_send_possibly_sent_keeps_counting_from_its_attempt(self, store: Store) -> None:
        [a0] = await store.enqueue([send("a")], NOW)
        await store.claim("wa", "w1", 10, LEASE, NOW)
        await store.retry(a0, "w1", NOW + 60, "timeout", NOW + 30, possibly_sent_since=NOW)
        assert await store.sending("wa", NOW) == 1
        assert await store.sending("wa", NOW + 1) == 0
        await store.dead_letter(a0, "w1", "gave up", NOW + 60)
        assert await store.sending("wa", NOW - 60) == 0
