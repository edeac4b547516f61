"""`workers.reorder_window`: how long a first attempt at a customer message waits so an older
message still on its way can overtake it (the store orders what waits; see the store
contract's `OrderContract` and the Cloud API end-to-end test)."""

from __future__ import annotations

from typing import Any

from gateway.outcomes import Held, reorder_wait
from gateway.store.base import Job

ARRIVED = 1_800_000_000.0


def job(written: float | None, *, job_id: int = 1, attempts: int = 0, **more: Any) -> Job:
    event = {"kind": "message", "native_id": f"m{job_id}", "timestamp": written}
    return Job(
        id=job_id,
        kind="send",
        route="r",
        source="wa",
        destination="crm",
        lane=more.get("lane", "chat-1"),
        payload={"event": event},
        state="ready",
        attempts=attempts,
        created_at=ARRIVED,
        available_at=ARRIVED,
    )


def test_no_window_no_wait() -> None:
    assert reorder_wait(job(ARRIVED - 0.5), 0.0, ARRIVED) is None


def test_a_fresh_message_waits_until_the_window_after_it_was_written() -> None:
    assert reorder_wait(job(ARRIVED - 0.5), 2.0, ARRIVED) == ARRIVED + 1.5
    assert reorder_wait(job(ARRIVED - 0.5), 2.0, ARRIVED + 1.5) is None


def test_never_longer_than_the_window_after_it_arrived() -> None:
    # A provider clock ahead of ours does not make it wait longer.
    assert reorder_wait(job(ARRIVED + 30), 2.0, ARRIVED) == ARRIVED + 2.0


def test_a_late_message_or_a_later_attempt_goes_at_once() -> None:
    assert reorder_wait(job(ARRIVED - 60), 2.0, ARRIVED) is None
    assert reorder_wait(job(ARRIVED - 0.5, attempts=1), 2.0, ARRIVED) is None
    assert reorder_wait(job(None), 2.0, ARRIVED) is None


def test_held_lets_what_comes_before_a_retried_job_go() -> None:
    ack, send, after, other = (job(None, job_id=n) for n in (9, 5, 7, 3))
    other = job(None, job_id=3, lane="chat-2")
    held = Held([ack, send, after, other])  # the lane's order as claimed, not the ids
    held.add(send)
    assert [held.free(j) for j in (ack, send, after, other)] == [True, False, False, True]
