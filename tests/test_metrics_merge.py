"""One scrape of a supervised gateway shows the HTTP process's and the delivery process's
series as one process would (`Metrics.merged`, `gateway.reports`)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from gateway.metrics import Metrics, record_queue_stats, standard_metrics
from gateway.reports import UP, DeliveryPeer, ReportServer
from gateway.store.base import DestinationStats

pytestmark = pytest.mark.anyio


def two_processes() -> tuple[Metrics, Metrics]:
    """What each side of a pair has counted: webhooks here, deliveries there."""
    http, delivery = standard_metrics(), standard_metrics()
    http.inc("gateway_events_received_total", 3, instance="wa")
    delivery.inc("gateway_events_received_total", 2, instance="wa")  # a provider's poll
    delivery.inc("gateway_jobs_delivered_total", 5, destination="crm", kind="message")
    for value in (0.01, 0.2, 7.0):
        delivery.observe("gateway_delivery_latency_seconds", value, destination="crm")
    http.observe("gateway_delivery_latency_seconds", 0.2, destination="crm")
    # Both compute the queue from the one store: the same 4 jobs, seen twice.
    for side in (http, delivery):
        record_queue_stats(side, [DestinationStats("crm", 4, 1, 90.0)], 100.0)
        side.set("gateway_account_state", 1, instance="wa", state="connected")
    return http, delivery


def test_counters_and_histograms_add_up_and_shared_gauges_do_not() -> None:
    http, delivery = two_processes()
    merged = http.merged(json.loads(json.dumps(delivery.snapshot())))  # as it travels

    assert merged.value("gateway_events_received_total", instance="wa") == 5
    assert merged.value("gateway_jobs_delivered_total", destination="crm", kind="message") == 5
    count, total = merged.histogram_counts("gateway_delivery_latency_seconds", destination="crm")
    assert (count, total) == (4, pytest.approx(7.41))
    text = merged.render()
    assert 'gateway_delivery_latency_seconds_bucket{destination="crm",le="0.25"} 3' in text
    assert 'gateway_delivery_latency_seconds_bucket{destination="crm",le="+Inf"} 4' in text
    # Shared gauges are this process's own, not twice the store's.
    assert merged.value("gateway_queue_depth", destination="crm") == 4
    assert merged.value("gateway_account_state", instance="wa", state="connected") == 1
    # The registry it was merged from is untouched: the next scrape merges afresh.
    assert http.value("gateway_events_received_total", instance="wa") == 3
    assert http.histogram_counts("gateway_delivery_latency_seconds", destination="crm")[0] == 1


def test_gauges_of_their_own_add_up_and_unknown_families_come_along() -> None:
    http, delivery = Metrics(), Metrics()
    for side in (http, delivery):
        side.gauge("busy_slots", "Slots sending now.")
    http.set("busy_slots", 1)
    delivery.set("busy_slots", 3)
    delivery.counter("only_there_total", "Counted by the delivery process alone.", ["x"])
    delivery.inc("only_there_total", 2, x="y")
    merged = http.merged(delivery.snapshot())
    assert merged.value("busy_slots") == 4
    assert merged.value("only_there_total", x="y") == 2
    assert "# TYPE only_there_total counter" in merged.render()


def test_a_family_declared_differently_is_left_out_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    http, delivery = Metrics(), Metrics()
    http.counter("sends_total", "Sends.", ["destination"])
    http.inc("sends_total", destination="crm")
    delivery.counter("sends_total", "Sends.", ["channel"])
    delivery.inc("sends_total", channel="wa")
    delivery.counter("fine_total", "Fine.")
    delivery.inc("fine_total")
    snapshot = delivery.snapshot()
    snapshot["garbage"] = {"kind": "counter"}
    merged = http.merged(snapshot)
    assert merged.value("sends_total", destination="crm") == 1
    assert merged.value("fine_total") == 1
    assert "garbage" not in merged.render()
    assert "metric sends_total of the delivery process left out" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="abstract socket address")
async def test_the_http_process_asks_the_delivery_process(tmp_path: Path) -> None:
    http, delivery = two_processes()
    where = b"\0whatschat-gateway-test-" + str(tmp_path).encode()
    flushed: list[bool] = []
    peer = DeliveryPeer(where, http)
    server = ReportServer(
        where,
        delivery,
        flush=lambda: flushed.append(True),
        problems=lambda: ["media: cannot write to var/media: No space left on device"],
    )

    down = await peer.metrics()  # not listening yet: this process's own, and up 0
    assert down.value(UP) == 0
    assert down.value("gateway_events_received_total", instance="wa") == 3
    assert await peer.problems() == []  # down is not a problem of readiness
    assert await server.start()
    try:
        merged = await peer.metrics()
        assert merged.value(UP) == 1 and flushed == [True]
        assert merged.value("gateway_jobs_delivered_total", destination="crm", kind="message") == 5
        assert await peer.problems() == [
            "media: cannot write to var/media: No space left on device"
        ]
    finally:
        await server.stop()
    assert (await peer.metrics()).value(UP) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="abstract socket address, SO_PEERCRED")
async def test_only_a_process_of_the_same_user_is_answered_or_believed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An abstract address has no permissions: anyone may connect, or bind it first."""
    import socket

    from gateway import reports

    left, right = socket.socketpair()
    with left, right:
        assert reports.same_user(left)
        real = os.getuid()
        monkeypatch.setattr(reports.os, "getuid", lambda: real + 1)
        assert not reports.same_user(left)
        monkeypatch.setattr(reports.os, "getuid", lambda: real)

    http, delivery = two_processes()
    where = b"\0whatschat-gateway-test-peer-" + str(tmp_path).encode()
    server = ReportServer(where, delivery, flush=lambda: None, problems=lambda: ["forged"])
    assert await server.start()
    try:
        # The delivery process refuses a stranger: the connection closes unanswered.
        monkeypatch.setattr(reports, "same_user", lambda _sock: False)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stranger:
            stranger.setblocking(False)
            await loop.sock_connect(stranger, where)
            await loop.sock_sendall(stranger, b"metrics\n")
            try:
                answer = await loop.sock_recv(stranger, 1 << 16)
            except ConnectionResetError:  # closed with the question unread
                answer = b""
            assert answer == b""
        # The HTTP process does not believe an address held by a stranger: it is down.
        peer = DeliveryPeer(where, http)
        assert (await peer.metrics()).value(UP) == 0
        assert await peer.problems() == []
    finally:
        await server.stop()
