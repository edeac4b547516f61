"""The send pacer on an injected clock: throughput bucket and per-recipient pair rate."""

from __future__ import annotations

import pytest
from gateway_cloudapi.ratelimit import SendPacer
from gateway_fakes.cloudapi import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def test_pair_rate_holds_short_waits_and_defers_long_ones(clock: FakeClock) -> None:
    pacer = SendPacer(80, 6.0, max_hold=3.0, clock=clock)
    assert pacer.book("a").wait == 0.0
    assert pacer.book("b").wait == 0.0  # other customers are not held back
    second = pacer.book("a")
    assert (second.booked, second.wait) == (False, pytest.approx(6.0))
    clock.advance(4.0)
    third = pacer.book("a")  # 2 s to go: held, and the slot is now taken
    assert (third.booked, third.wait) == (True, pytest.approx(2.0))
    clock.advance(2.0)
    assert pacer.book("a").wait == pytest.approx(6.0)


def test_throughput_bucket_spreads_a_burst(clock: FakeClock) -> None:
    pacer = SendPacer(10, 0.0, max_hold=1.0, clock=clock)
    waits = [pacer.book(f"c{i}").wait for i in range(12)]
    assert waits[:10] == [0.0] * 10  # one second of burst
    assert waits[10:] == [pytest.approx(0.1), pytest.approx(0.2)]
    clock.advance(1.0)
    assert pacer.book("later").wait == pytest.approx(0.0, abs=1e-9)


def test_a_deferred_send_reserves_nothing(clock: FakeClock) -> None:
    pacer = SendPacer(80, 6.0, max_hold=0.0, clock=clock)
    pacer.book("a")
    for _ in range(5):
        assert not pacer.book("a").booked
    clock.advance(6.0)
    assert pacer.book("a").wait == 0.0


def test_meta_pair_errors_push_the_next_slot(clock: FakeClock) -> None:
    pacer = SendPacer(80, 0.0, max_hold=10.0, clock=clock)
    pacer.penalize("a", 6.0)
    assert pacer.book("a").wait == pytest.approx(6.0)
