"""The behaviour every `Store` backend must show, as a reusable pytest base class.

A backend's test module subclasses `StoreContract` and overrides the `store_url` fixture
with a URL to fresh, empty storage (a file under `tmp_path`, a new PostgreSQL schema):

    class TestSQLiteStore(StoreContract):
        @pytest.fixture
        def store_url(self, tmp_path: Path) -> str:
            return f"sqlite:///{tmp_path}/gateway.db"

Override `make_store` too if the backend is not reachable through `open_store`. Time is
driven by explicit `now` values, never by sleeping; nothing asserts on wall-clock speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

from gateway.errors import StoreError
from gateway.store import open_store
from gateway.store.base import (
    Finished,
    NewJob,
    Store,
    StoredRoute,
)
from gateway.store.contract_data import LEASE, NOW, ids, item, job, mapping
from gateway.store.contract_history import HistoryContract
from gateway.store.contract_lanes import LanesContract
from gateway.store.contract_order import OrderContract
from gateway.store.contract_sending import SendingContract
from gateway.store.contract_shared import SharedStateContract

__all__ = ["LEASE", "NOW", "StoreContract", "item", "job"]


class StoreContract(
    SharedStateContract, HistoryContract, OrderContract, SendingContract, LanesContract
):
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("a StoreContract subclass must override the store_url fixture")

    async def make_store(self, url: str) -> Store:
        """An opened store on `url`; called again with the same URL to test a restart."""
        store = open_store(url)
        await store.open()
        return store

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[Store]:
        store = await self.make_store(store_url)
        try:
            yield store
        finally:
            await store.close()

    # lifecycle -------------------------------------------------------------------------
    async def test_an_open_store_answers(self, store: Store) -> None:
        await store.ping()
        assert await store.schema_version() >= 1

    async def test_data_survives_close_and_reopen(self, store: Store) -> None:
        [event_id] = await store.ingest([item("k1", job("a", 0), job("a", 1))], NOW)
        [first, second] = ids(await store.claim("crm", "w1", 10, LEASE, NOW))
        await store.finish([Finished(first, mappings=[mapping("s1", "d1")])], "w1", NOW)
        await store.dead_letter(second, "w1", "rejected", NOW)
        await store.kv_put("ns", "token", {"value": "t"})
        await store.save_route(StoredRoute("r", "wa", "b24", None, "both"))
        await store.merge_status("wa-1", "m1", 3, NOW)
        await store.close()

        reopened = await self.make_store(store.url)
        try:
            assert event_id is not None
            assert await reopened.ingest([item("k1", job("a", 9))], NOW) == [None]
            assert await reopened.lookup_by_source("route-1", "channel", "s1") == mapping(
                "s1", "d1"
            )
            assert ids(await reopened.dead_letters()) == [second]
            assert await reopened.kv_get("ns", "token") == {"value": "t"}
            assert [r.name for r in await reopened.load_routes()] == ["r"]
            assert await reopened.merge_status("wa-1", "m1", 2, NOW) is False
            assert await reopened.claim("crm", "w2", 10, LEASE, NOW) == []
        finally:
            await reopened.close()

    # ingest ----------------------------------------------------------------------------
    async def test_ingest_stores_events_and_enqueues_their_jobs(self, store: Store) -> None:
        result = await store.ingest([item("k1", job("a", 0), job("a", 1)), item("k2")], NOW)
        assert len(result) == 2 and None not in result and result[0] != result[1]
        claimed = await store.claim("crm", "w1", 10, LEASE, NOW)
        assert [j.payload for j in claimed] == [{"lane": "a", "n": 0}, {"lane": "a", "n": 1}]
        first = claimed[0]
        assert (first.kind, first.route, first.source, first.destination, first.lane) == (
            "send",
            "route-1",
            "channel",
            "crm",
            "a",
        )
        assert (first.state, first.attempts, first.created_at, first.available_at) == (
            "ready",
            0,
            NOW,
            NOW,
        )
        assert first.last_error is None and first.sending_since is None and first.dead_at is None

    async def test_the_same_key_twice_is_one_event_with_its_jobs_once(self, store: Store) -> None:
        [first] = await store.ingest([item("k1", job("a", 0))], NOW)
        assert first is not None
        assert await store.ingest([item("k1", job("a", 0))], NOW + 1) == [None]
        assert len(await store.claim("crm", "w1", 10, LEASE, NOW + 1)) == 1

    async def test_a_key_repeated_within_one_call_counts_once(self, store: Store) -> None:
        result = await store.ingest([item("k1", job("a", 0)), item("k1", job("a", 1))], NOW)
        assert result[0] is not None and result[1] is None
        assert [j.payload["n"] for j in await store.claim("crm", "w1", 10, LEASE, NOW)] == [0]

    async def test_dedupe_keys_are_per_instance(self, store: Store) -> None:
        one = await store.ingest([item("k1", instance="wa-1")], NOW)
        two = await store.ingest([item("k1", instance="wa-2")], NOW)
        assert None not in one + two

    async def test_concurrent_ingests_of_one_key_store_it_once(self, store: Store) -> None:
        results: list[int | None] = []

        async def ingest() -> None:
            results.extend(await store.ingest([item("k1", job("a"))], NOW))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(ingest)
        assert sum(r is not None for r in results) == 1
        assert len(await store.claim("crm", "w1", 50, LEASE, NOW)) == 1

    async def test_ingest_is_all_or_nothing(self, store: Store) -> None:
        broken = NewJob("bogus", "route-1", "channel", "crm", "b", {})  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            await store.ingest([item("k1", job("a")), item("k2", broken)], NOW)
        assert await store.claim("crm", "w1", 10, LEASE, NOW) == []
        assert None not in await store.ingest([item("k1", job("a")), item("k2")], NOW)

    async def test_enqueue_returns_ascending_ids(self, store: Store) -> None:
        new = await store.enqueue([job("a", 0), job("b", 1), job("a", 2)], NOW)
        assert new == sorted(new) and len(set(new)) == 3
        found = [await store.get_job(i) for i in new]
        assert [j.payload["n"] for j in found if j is not None] == [0, 1, 2]

    async def test_get_job_round_trips_the_payload(self, store: Store) -> None:
        payload = {"text": "Привет 👋", "list": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
        [job_id] = await store.enqueue([NewJob("ack", "r", "s", "d", "l", payload)], NOW)
        found = await store.get_job(job_id)
        assert found is not None and found.payload == payload and found.kind == "ack"
        assert await store.get_job(job_id + 1000) is None

    # retry, dead letters, replay -------------------------------------------------------
    async def test_retry_blocks_the_lane_until_its_time_and_ends_the_lease(
        self, store: Store
    ) -> None:
        a0, a1, b0 = await store.enqueue([job("a", 0), job("a", 1), job("b", 0)], NOW)
        await store.claim("crm", "w1", 10, 600, NOW)
        await store.retry(a0, "w1", NOW + 60, "timeout", NOW + 1)
        await store.finish([Finished(b0)], "w1", NOW + 1)
        assert await store.claim("crm", "w2", 10, LEASE, NOW + 59) == []
        retried = await store.get_job(a0)
        assert retried is not None
        assert (retried.last_error, retried.available_at, retried.sending_since) == (
            "timeout",
            NOW + 60,
            None,
        )
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW + 60)) == [a0, a1]

    async def test_claim_marks_what_it_hands_out_and_returns_it_unmarked(
        self, store: Store
    ) -> None:
        a0, a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        first = await store.claim("crm", "w1", 10, LEASE, NOW)
        assert [(j.attempts, j.sending_since) for j in first] == [(0, None), (0, None)]
        found = await store.get_job(a0)
        assert found is not None and (found.attempts, found.sending_since) == (1, NOW)
        # The lease expired with the outcome unknown: the next claim sees the attempt.
        later = NOW + LEASE
        again = await store.claim("crm", "w2", 10, LEASE, later)
        assert [(j.id, j.attempts, j.sending_since) for j in again] == [(a0, 1, NOW), (a1, 1, NOW)]
        found = await store.get_job(a1)
        assert found is not None and (found.attempts, found.sending_since) == (2, later)

    async def test_a_retried_job_keeps_its_attempts_and_loses_its_mark(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.retry(a0, "w1", NOW + 2, "503", NOW + 1)
        [again] = await store.claim("crm", "w1", 10, LEASE, NOW + 2)
        assert (again.attempts, again.sending_since) == (1, None)
        found = await store.get_job(a0)
        assert found is not None and (found.attempts, found.sending_since) == (2, NOW + 2)

    async def test_a_job_retried_as_possibly_sent_keeps_that_mark(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        # Waiting to ask the destination whether the attempt begun at NOW landed.
        await store.retry(a0, "w1", NOW + 5, "ask later", NOW + 1, possibly_sent_since=NOW)
        assert await store.claim("crm", "w2", 10, LEASE, NOW + 4) == []
        [again] = await store.claim("crm", "w2", 10, LEASE, NOW + 5)
        assert (again.attempts, again.sending_since) == (1, NOW)

    async def test_release_takes_the_mark_off_unsent_jobs_only(self, store: Store) -> None:
        a0, a1, b0 = await store.enqueue([job("a", 0), job("a", 1), job("b", 0)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.finish([Finished(a0)], "w1", NOW)
        await store.release("w1", ["a", "b"], NOW, unsent=[a1])
        claimed = await store.claim("crm", "w2", 10, LEASE, NOW + 1)
        assert [(j.id, j.attempts, j.sending_since) for j in claimed] == [
            (a1, 0, None),
            (b0, 1, NOW),  # not listed: it may have been sent
        ]
        # Without lanes, the marks come off and the leases stay; twice is the same as once.
        for _ in range(2):
            await store.release("w2", [], NOW + 1, unsent=[a1])
        assert await store.claim("crm", "w3", 10, LEASE, NOW + 1) == []
        found = [await store.get_job(a1), await store.get_job(b0)]
        assert [(j.attempts, j.sending_since) for j in found if j] == [(0, None), (2, NOW + 1)]

    async def test_release_leaves_the_mark_of_another_owners_claim(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        later = NOW + LEASE
        await store.claim("crm", "w2", 10, LEASE, later)  # w1's lease ran out meanwhile
        await store.release("w1", ["a"], later, unsent=[a0])
        found = await store.get_job(a0)
        assert found is not None and (found.attempts, found.sending_since) == (2, later)

    async def test_dead_letter_parks_the_job_and_the_lane_proceeds(self, store: Store) -> None:
        a0, a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        await store.claim("crm", "w1", 10, LEASE, NOW)
        await store.dead_letter(a0, "w1", "invalid number", NOW + 5)
        dead = await store.get_job(a0)
        assert dead is not None
        assert (dead.state, dead.last_error, dead.dead_at, dead.sending_since) == (
            "dead",
            "invalid number",
            NOW + 5,
            None,
        )
        assert await store.claim("crm", "w2", 10, LEASE, NOW + 5) == []  # a1 is w1's still
        await store.finish([Finished(a1)], "w1", NOW + 5)
        [a2] = await store.enqueue([job("a", 2)], NOW + 5)
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW + 5)) == [a2]

    async def test_dead_letter_unblocks_a_lane_waiting_for_a_retry(self, store: Store) -> None:
        a0, a1 = await store.enqueue([job("a", 0), job("a", 1)], NOW)
        await store.claim("crm", "w1", 1, LEASE, NOW)
        await store.retry(a0, "w1", NOW + 3600, "timeout", NOW)
        await store.dead_letter(a0, "admin", "given up", NOW + 10)
        assert ids(await store.claim("crm", "w2", 10, LEASE, NOW + 10)) == [a1]

    async def test_dead_letters_are_listed_oldest_first_with_filters(self, store: Store) -> None:
        a0, b0, c0 = await store.enqueue([job("a"), job("b"), job("c", destination="x")], NOW)
        await store.dead_letter(b0, "w", "b", NOW + 1)
        await store.dead_letter(c0, "w", "c", NOW + 2)
        await store.dead_letter(a0, "w", "a", NOW + 3)
        assert ids(await store.dead_letters()) == [b0, c0, a0]
        assert ids(await store.dead_letters(limit=2)) == [b0, c0]
        assert ids(await store.dead_letters(destination="crm")) == [b0, a0]
        assert ids(await store.dead_letters(lane="a")) == [a0]

    async def test_replay_puts_a_dead_job_back_at_the_tail_of_its_lane(self, store: Store) -> None:
        a0, a1, a2 = await store.enqueue([job("a", 0), job("a", 1), job("a", 2)], NOW)
        await store.claim("crm", "w1", 1, LEASE, NOW)
        await store.dead_letter(a0, "w1", "rejected", NOW + 1)
        assert await store.replay(job_ids=[a0], now=NOW + 100) == 1
        assert await store.get_job(a0) is None  # it lives on under a new id
        claimed = await store.claim("crm", "w2", 10, LEASE, NOW + 100)
        assert ids(claimed)[:2] == [a1, a2]
        replayed = claimed[2]
        assert replayed.id > a2 and replayed.payload == job("a", 0).payload
        assert (replayed.state, replayed.attempts, replayed.last_error) == ("ready", 0, "rejected")
        assert (replayed.dead_at, replayed.sending_since, replayed.available_at) == (
            None,
            None,
            NOW + 100,
        )
        assert await store.dead_letters() == []

    async def test_replay_into_a_leased_lane_does_not_stall_it(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a", 0)], NOW)
        await store.claim("crm", "w1", 1, LEASE, NOW)
        await store.dead_letter(a0, "w1", "rejected", NOW)
        a1, _ = await store.enqueue([job("a", 1), job("a", 2)], NOW)
        assert ids(await store.claim("crm", "w1", 1, LEASE, NOW)) == [a1]
        assert await store.replay(job_ids=[a0], now=NOW) == 1  # while w1 holds the lane
        await store.finish([Finished(a1)], "w1", NOW)
        # The lease ended with its last job: the lane moves on at once, not at expiry.
        assert [j.payload for j in await store.claim("crm", "w2", 10, LEASE, NOW)] == [
            job("a", 2).payload,
            job("a", 0).payload,
        ]

    async def test_pruned_events_are_forgotten_and_their_jobs_stay(self, store: Store) -> None:
        old = item("k-old", job("a"))
        new = item("k-new", job("b"))
        await store.ingest([old], NOW)
        await store.ingest([new], NOW + 100)
        assert await store.prune_events(NOW + 50) == 1
        # The old key is gone (a redelivery now would be new); the recent one still dedupes.
        assert await store.ingest([new], NOW + 200) == [None]
        assert len(await store.claim("crm", "w", 10, LEASE, NOW + 200)) == 2

    async def test_renew_keeps_a_lease_past_its_first_expiry(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        assert ids(await store.claim("crm", "w1", 1, LEASE, NOW)) == [a0]
        await store.renew("w1", ["a"], NOW + 3 * LEASE)
        await store.renew("w2", ["a"], NOW)  # not w2's lease: no effect
        assert await store.claim("crm", "w2", 1, LEASE, NOW + 2 * LEASE) == []
        assert ids(await store.claim("crm", "w2", 1, LEASE, NOW + 3 * LEASE + 1)) == [a0]

    async def test_replay_recreates_an_emptied_lane(self, store: Store) -> None:
        [a0] = await store.enqueue([job("a")], NOW)
        await store.dead_letter(a0, "w1", "rejected", NOW)
        assert await store.destinations_with_work(NOW) == []
        assert await store.replay(lane="a", now=NOW + 1) == 1
        assert await store.destinations_with_work(NOW + 1) == ["crm"]
        [again] = await store.claim("crm", "w1", 10, LEASE, NOW + 1)
        assert again.payload == job("a").payload

    async def test_replay_selects_by_ids_lane_and_time_window(self, store: Store) -> None:
        jobs = await store.enqueue([job("a"), job("a"), job("b"), job("b"), job("c")], NOW)
        for n, job_id in enumerate(jobs[:4]):
            await store.dead_letter(job_id, "w", "x", NOW + n)
        ready = jobs[4]
        assert await store.replay(job_ids=[ready], now=NOW) == 0
        assert await store.replay(lane="a", until=NOW, now=NOW) == 1
        assert await store.replay(since=NOW + 2, until=NOW + 2, now=NOW) == 1
        assert ids(await store.dead_letters()) == [jobs[1], jobs[3]]
        assert await store.replay(now=NOW) == 2
        assert await store.dead_letters() == []

    async def test_release_frees_only_the_callers_leases(self, store: Store) -> None:
        a0, _ = await store.enqueue([job("a"), job("b")], NOW)
        await store.claim("crm", "w1", 1, LEASE, NOW)
        await store.claim("crm", "w2", 1, LEASE, NOW)
        await store.release("w1", ["a", "b"], NOW)
        assert ids(await store.claim("crm", "w3", 10, LEASE, NOW)) == [a0]

    # scheduling and stats --------------------------------------------------------------
    async def test_next_due_and_destinations_with_work(self, store: Store) -> None:
        assert await store.next_due("crm", NOW) is None
        assert await store.destinations_with_work(NOW) == []
        a0, _ = await store.enqueue([job("a"), job("x", destination="channel")], NOW)
        assert await store.destinations_with_work(NOW) == ["channel", "crm"]
        assert await store.next_due("crm", NOW) == NOW
        await store.claim("crm", "w1", 10, LEASE, NOW)
        assert await store.next_due("crm", NOW) == NOW + LEASE
        await store.retry(a0, "w1", NOW + 100, "later", NOW)
        assert await store.next_due("crm", NOW) == NOW + 100
        await store.claim("crm", "w1", 10, LEASE, NOW + 100)
        await store.finish([Finished(a0)], "w1", NOW + 100)
        assert await store.next_due("crm", NOW + 100) is None
        assert await store.destinations_with_work(NOW + 100) == ["channel"]

    async def test_stats_count_ready_and_dead_jobs_per_destination(self, store: Store) -> None:
        assert await store.stats(NOW) == []
        await store.enqueue([job("a")], NOW)
        a1, _b0, x0 = await store.enqueue([job("a"), job("b"), job("x", destination="x")], NOW + 5)
        await store.dead_letter(a1, "w", "bad", NOW + 6)
        await store.dead_letter(x0, "w", "bad", NOW + 6)
        by_destination = {s.destination: s for s in await store.stats(NOW + 6)}
        crm, x = by_destination["crm"], by_destination["x"]
        assert (crm.ready, crm.dead, crm.oldest_ready_at) == (2, 1, NOW)
        assert (x.ready, x.dead, x.oldest_ready_at) == (0, 1, None)

    # statuses, provider state, locks, routes -------------------------------------------
    async def test_merge_status_only_moves_up(self, store: Store) -> None:
        assert await store.merge_status("wa-1", "m1", 1, NOW) is True
        assert await store.merge_status("wa-1", "m1", 4, NOW) is True
        assert await store.merge_status("wa-1", "m1", 3, NOW) is False
        assert await store.merge_status("wa-1", "m1", 4, NOW) is False
        assert await store.merge_status("wa-2", "m1", 3, NOW) is True

    async def test_kv_round_trip(self, store: Store) -> None:
        assert await store.kv_get("ns", "k") is None
        await store.kv_put("ns", "k", {"token": "a", "n": [1, 2]})
        await store.kv_put("ns", "k", {"token": "b"})
        await store.kv_put("other", "k", "elsewhere")
        assert await store.kv_get("ns", "k") == {"token": "b"}
        await store.kv_delete("ns", "k")
        await store.kv_delete("ns", "never-was")
        assert await store.kv_get("ns", "k") is None
        assert await store.kv_get("other", "k") == "elsewhere"

    async def test_kv_items_lists_one_namespace_by_prefix(self, store: Store) -> None:
        for key in ["chat:2", "chat:1", "chatter", "ä:1", "z"]:
            await store.kv_put("ns", key, key.upper())
        await store.kv_put("other", "chat:3", 3)
        assert await store.kv_items("ns", "chat:") == [("chat:1", "CHAT:1"), ("chat:2", "CHAT:2")]
        assert [k for k, _ in await store.kv_items("ns")] == [
            "chat:1",
            "chat:2",
            "chatter",
            "z",
            "ä:1",
        ]
        assert await store.kv_items("ns", "ä") == [("ä:1", "Ä:1")]
        assert await store.kv_items("ns", "nothing") == []

    async def test_lock_excludes_holders_of_the_same_name(self, store: Store) -> None:
        trace: list[tuple[str, int]] = []

        async def critical(n: int) -> None:
            async with store.lock("token-refresh"):
                trace.append(("enter", n))
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
                trace.append(("exit", n))

        async with anyio.create_task_group() as group:
            for n in range(5):
                group.start_soon(critical, n)
        assert len(trace) == 10
        for enter, exit_ in zip(trace[::2], trace[1::2], strict=True):
            assert enter[0] == "enter" and exit_ == ("exit", enter[1])

    async def test_locks_of_different_names_are_independent(self, store: Store) -> None:
        async with store.lock("a"):
            with anyio.fail_after(5):
                async with store.lock("b"):
                    pass

    async def test_routes_are_saved_updated_and_deleted(self, store: Store) -> None:
        await store.save_route(StoredRoute("sales", "wa-1", "b24", "line-1", "both"))
        await store.save_route(StoredRoute("alerts", "wa-2", "b24", None, "inbound"))
        await store.save_route(StoredRoute("sales", "wa-1", "b24", "line-2", "both"))
        assert await store.load_routes() == [
            StoredRoute("alerts", "wa-2", "b24", None, "inbound"),
            StoredRoute("sales", "wa-1", "b24", "line-2", "both"),
        ]
        await store.delete_route("alerts")
        await store.delete_route("never-was")
        assert [r.name for r in await store.load_routes()] == ["sales"]
