"""The contract of shared state: versions and held messages (mixed into `StoreContract`)."""

from __future__ import annotations

import pytest

from gateway.store.base import (
    BEHIND_HELD,
    NO_ROUTE,
    ROUTE_GONE,
    Finished,
    IngestItem,
    NewJob,
    Store,
    StoredRoute,
)
from gateway.store.contract_data import LEASE, NOW


def send(lane: str = "r|crm|chat-1", n: int = 0) -> NewJob:
    return NewJob("send", "r", "wa", "crm", lane, {"n": n})


def message(
    key: str,
    *jobs: NewJob,
    hold: bool = False,
    conversation: str | None = "chat-1",
    instance: str = "wa",
) -> IngestItem:
    return IngestItem(
        instance=instance,
        dedupe_key=key,
        event={"event": {"key": key}, "target": None},
        jobs=jobs,
        hold=hold,
        conversation=conversation,
    )


class SharedStateContract:
    pytestmark = pytest.mark.anyio

    async def test_route_changes_bump_the_routes_version(self, store: Store) -> None:
        before = (await store.versions()).get("routes", 0)
        await store.save_route(StoredRoute("r1", "wa", "crm", "t", "both"))
        after_save = (await store.versions())["routes"]
        await store.delete_route("r1")
        assert before < after_save < (await store.versions())["routes"]

    async def test_bump_raises_each_named_scope_once(self, store: Store) -> None:
        await store.bump(["accounts", "instance:b24", "accounts"])
        first = await store.versions()
        await store.bump(["instance:b24"])
        second = await store.versions()
        assert second["accounts"] == first["accounts"]
        assert second["instance:b24"] == first["instance:b24"] + 1

    async def test_a_message_without_a_route_is_held_not_dropped(self, store: Store) -> None:
        before = (await store.versions()).get("held", 0)
        ids = await store.ingest([message("m1", hold=True)], NOW)
        assert ids[0] is not None
        held = await store.held()
        assert [(m.dedupe_key, m.instance, m.conversation, m.reason) for m in held] == [
            ("m1", "wa", "chat-1", NO_ROUTE)
        ]
        assert held[0].event == {"event": {"key": "m1"}, "target": None}
        assert (await store.versions())["held"] > before
        assert await store.claim("crm", "w", 10, LEASE, NOW) == []

    async def test_a_duplicate_of_a_held_message_is_not_held_twice(self, store: Store) -> None:
        await store.ingest([message("m1", hold=True)], NOW)
        assert await store.ingest([message("m1", hold=True)], NOW) == [None]
        assert len(await store.held()) == 1

    async def test_a_routed_message_waits_behind_held_ones_of_its_conversation(
        self, store: Store
    ) -> None:
        await store.ingest([message("m1", hold=True)], NOW)
        await store.ingest(
            [message("m2", send(n=2)), message("o1", send("r|crm|other"), conversation="other")],
            NOW,
        )
        held = await store.held()
        assert [(m.dedupe_key, m.reason) for m in held] == [("m1", NO_ROUTE), ("m2", BEHIND_HELD)]
        claimed = await store.claim("crm", "w", 10, LEASE, NOW)
        assert [j.lane for j in claimed] == ["r|crm|other"]

    async def test_within_one_call_a_later_message_waits_behind_a_held_one(
        self, store: Store
    ) -> None:
        await store.ingest([message("m1", hold=True), message("m2", send(n=2))], NOW)
        assert [m.dedupe_key for m in await store.held()] == ["m1", "m2"]
        assert await store.claim("crm", "w", 10, LEASE, NOW) == []

    async def test_release_enqueues_held_messages_in_order(self, store: Store) -> None:
        await store.ingest([message("m1", hold=True)], NOW)
        await store.ingest([message("m2", hold=True)], NOW)
        held = await store.held()
        released = [(m.id, [send(n=i)]) for i, m in enumerate(held)]
        assert await store.release_held(released, NOW + 1) == 2
        assert await store.held() == []
        claimed = await store.claim("crm", "w", 10, LEASE, NOW + 1)
        assert [j.payload["n"] for j in claimed] == [0, 1]
        # Released twice (another process was quicker): nothing happens the second time.
        assert await store.release_held(released, NOW + 2) == 0
        # Once nothing is held, new messages of the conversation go straight to the queue.
        await store.ingest([message("m3", send(n=3))], NOW + 3)
        assert await store.held() == []

    async def test_release_with_no_jobs_just_drops_the_held_message(self, store: Store) -> None:
        await store.ingest([message("m1", hold=True)], NOW)
        (held,) = await store.held()
        assert await store.release_held([(held.id, [])], NOW) == 1
        assert await store.held() == [] and await store.held(dead=True) == []

    async def test_old_held_messages_become_dead_letters_and_can_be_held_again(
        self, store: Store
    ) -> None:
        await store.ingest([message("old", hold=True)], NOW)
        await store.ingest([message("new", hold=True, conversation="c2")], NOW + 100)
        expired = await store.expire_held(NOW + 50, "held too long", NOW + 200)
        assert [(m.dedupe_key, m.reason, m.dead_at) for m in expired] == [
            ("old", "held too long", NOW + 200)
        ]
        assert [m.dedupe_key for m in await store.held()] == ["new"]
        assert [m.dedupe_key for m in await store.held(dead=True)] == ["old"]
        # A dead one no longer holds its conversation back.
        await store.ingest([message("next", send())], NOW + 300)
        assert len(await store.claim("crm", "w", 10, LEASE, NOW + 300)) == 1
        stats = {(s.instance, s.target): (s.held, s.dead) for s in await store.held_stats()}
        assert stats == {("wa", None): (1, 1)}
        assert await store.replay_held(ids=[expired[0].id], now=NOW + 400) == 1
        assert sorted(m.dedupe_key for m in await store.held()) == ["new", "old"]
        assert await store.replay_held(now=NOW + 500) == 0

    async def test_a_queued_job_whose_route_is_gone_is_held_again(self, store: Store) -> None:
        await store.ingest([message("m1", send(n=1)), message("m2", send(n=2))], NOW)
        await store.ingest([message("o1", send("r|crm|other"), conversation="other")], NOW)
        before = (await store.versions()).get("held", 0)
        claimed = await store.claim("crm", "w", 10, LEASE, NOW)
        first, second, other = sorted(claimed, key=lambda j: j.id)
        # Meanwhile, the route gone, a newer message was held, and one of another chat.
        await store.ingest([message("new", hold=True)], NOW + 1)
        await store.ingest([message("x", hold=True, conversation="c2")], NOW + 1)
        for job, key in ((first, "m1"), (second, "m2")):
            assert await store.hold_job(job.id, "w", message(key, hold=True), NOW + 2)
        # Held in the order they arrived, ahead of the newer message: released first.
        held = await store.held()
        assert [(m.dedupe_key, m.conversation, m.reason) for m in held] == [
            ("m1", "chat-1", ROUTE_GONE),
            ("x", "c2", NO_ROUTE),
            ("m2", "chat-1", ROUTE_GONE),
            ("new", "chat-1", NO_ROUTE),
        ]
        assert [m.held_at for m in held] == [NOW, NOW + 1, NOW, NOW + 1]
        assert (await store.versions())["held"] > before
        assert [s.step for s in await store.job_history(job_ids=[first.id])] == ["parked"]
        # The jobs are gone (not dead letters); the lane is free, the other one still leased.
        assert await store.dead_letters() == []
        assert not await store.hold_job(first.id, "w", message("m1", hold=True), NOW + 2)
        assert len(await store.held()) == 4
        await store.finish([Finished(other.id)], "w", NOW + 2)
        # A later message of the conversation waits behind them, as behind any held one.
        await store.ingest([message("m3", send(n=3))], NOW + 3)
        assert [m.dedupe_key for m in await store.held(instance="wa")][-1] == "m3"
        assert await store.claim("crm", "w", 10, LEASE, NOW + 3) == []

    async def test_held_lists_by_instance_target_and_position(self, store: Store) -> None:
        await store.ingest([message("a1", hold=True, instance="a")], NOW)
        await store.ingest(
            [
                IngestItem(
                    "b",
                    "b1",
                    {"event": {}, "target": "p/1"},
                    hold=True,
                    conversation="c",
                    target="p/1",
                ),
                IngestItem(
                    "b",
                    "b2",
                    {"event": {}, "target": "p/2"},
                    hold=True,
                    conversation="c",
                    target="p/2",
                ),
            ],
            NOW,
        )
        assert [m.dedupe_key for m in await store.held(instance="b")] == ["b1", "b2"]
        assert [m.dedupe_key for m in await store.held(instance="b", target="p/2")] == ["b2"]
        first = (await store.held(limit=1))[0]
        assert [m.dedupe_key for m in await store.held(after=first.id)] == ["b1", "b2"]
