"""The Prometheus registry: declaring, updating, and the 0.0.4 text format."""

from __future__ import annotations

import re

import pytest

from gateway.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    Metrics,
    record_account_state,
    record_queue_stats,
    standard_metrics,
)
from gateway.models import AccountStatus
from gateway.store.base import DestinationStats

# One sample line of the text format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SAMPLE.match(line), line


def test_counter_with_labels_renders_sorted_series() -> None:
    m = Metrics()
    m.counter("things_total", "Things seen.", ["instance"])
    m.inc("things_total", instance="b")
    m.inc("things_total", 2.5, instance="a")
    m.inc("things_total", instance="b")
    text = m.render()
    assert text == (
        "# HELP things_total Things seen.\n"
        "# TYPE things_total counter\n"
        'things_total{instance="a"} 2.5\n'
        'things_total{instance="b"} 2\n'
    )
    assert m.value("things_total", instance="b") == 2
    assert_valid_exposition(text)


def test_unlabelled_counter_reads_zero_before_first_inc() -> None:
    m = Metrics()
    m.counter("refused_total", "Refusals.")
    assert "refused_total 0\n" in m.render()
    m.inc("refused_total")
    assert "refused_total 1\n" in m.render()


def test_label_values_and_help_are_escaped() -> None:
    m = Metrics()
    m.gauge("g", 'Help with \\ backslash\nand newline and "quotes".', ["path"])
    m.set("g", 1, path='C:\\dir\n"quoted"')
    text = m.render()
    assert '# HELP g Help with \\\\ backslash\\nand newline and "quotes".\n' in text
    assert 'g{path="C:\\\\dir\\n\\"quoted\\""} 1\n' in text
    assert_valid_exposition(text)


def test_gauge_set_inc_and_negative() -> None:
    m = Metrics()
    m.gauge("depth", "Depth.", ["destination"])
    m.set("depth", 5, destination="crm")
    m.inc("depth", -2, destination="crm")
    assert m.value("depth", destination="crm") == 3
    m.set("depth", 0.125, destination="crm")
    assert 'depth{destination="crm"} 0.125\n' in m.render()


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    m = Metrics()
    m.histogram("latency_seconds", "Latency.", ["destination"], [0.1, 1, 10])
    for value in (0.05, 0.1, 0.5, 1, 20):
        m.observe("latency_seconds", value, destination="crm")
    text = m.render()
    expected = (
        'latency_seconds_bucket{destination="crm",le="0.1"} 2\n'
        'latency_seconds_bucket{destination="crm",le="1"} 4\n'
        'latency_seconds_bucket{destination="crm",le="10"} 4\n'
        'latency_seconds_bucket{destination="crm",le="+Inf"} 5\n'
        'latency_seconds_sum{destination="crm"} 21.65\n'
        'latency_seconds_count{destination="crm"} 5\n'
    )
    assert expected in text
    assert "# TYPE latency_seconds histogram\n" in text
    assert m.histogram_counts("latency_seconds", destination="crm") == (5, pytest.approx(21.65))
    assert_valid_exposition(text)


def test_unlabelled_histogram_is_exposed_empty() -> None:
    m = Metrics()
    m.histogram("h", "H.", buckets=[1.0, float("inf")])
    text = m.render()
    assert 'h_bucket{le="1"} 0\nh_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n' in text


def test_wrong_use_is_refused() -> None:
    m = Metrics()
    m.counter("c_total", "C.", ["a"])
    m.gauge("g", "G.")
    m.histogram("h", "H.", ["a"], [1])
    with pytest.raises(ValueError):
        m.inc("c_total")  # missing label
    with pytest.raises(ValueError):
        m.inc("c_total", a="x", b="y")  # extra label
    with pytest.raises(ValueError):
        m.inc("c_total", b="y")  # wrong label
    with pytest.raises(ValueError):
        m.inc("c_total", -1, a="x")
    with pytest.raises(ValueError):
        m.set("c_total", 1, a="x")
    with pytest.raises(ValueError):
        m.observe("c_total", 1, a="x")
    with pytest.raises(ValueError):
        m.inc("h", a="x")
    with pytest.raises(KeyError, match="not declared"):
        m.inc("nope_total")


@pytest.mark.parametrize(
    "declare",
    [
        lambda m: m.counter("bad-name", "x"),
        lambda m: m.counter("ok", "x", ["bad-label"]),
        lambda m: m.counter("ok", "x", ["__reserved"]),
        lambda m: m.counter("ok", "x", ["a", "a"]),
        lambda m: m.histogram("ok", "x", ["le"]),
        lambda m: m.histogram("ok", "x", [], [1, 1]),
        lambda m: m.histogram("ok", "x", [], [2, 1]),
        lambda m: m.histogram("ok", "x", [], [float("nan")]),
        lambda m: m.histogram("ok", "x", [], []),
    ],
)
def test_invalid_declarations(declare) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        declare(Metrics())


def test_labelnames_as_plain_string_is_a_mistake() -> None:
    with pytest.raises(TypeError):
        Metrics().counter("ok_total", "x", "instance")


def test_redeclaring_same_family_is_harmless_but_conflicts_are_not() -> None:
    m = Metrics()
    m.counter("x_total", "X.", ["a"])
    m.inc("x_total", a="1")
    m.counter("x_total", "X again.", ["a"])
    assert m.value("x_total", a="1") == 1
    with pytest.raises(ValueError, match="already declared"):
        m.gauge("x_total", "X.", ["a"])
    with pytest.raises(ValueError, match="already declared"):
        m.counter("x_total", "X.", ["b"])


def test_remove_forgets_a_series() -> None:
    m = Metrics()
    m.gauge("g", "G.", ["d"])
    m.set("g", 1, d="x")
    m.remove("g", d="x")
    assert 'g{d="x"}' not in m.render()


STANDARD = {
    "gateway_events_received_total": ("counter", ("instance",)),
    "gateway_events_duplicate_total": ("counter", ("instance",)),
    "gateway_webhooks_rejected_total": ("counter", ("instance", "reason")),
    "gateway_jobs_delivered_total": ("counter", ("destination", "kind")),
    "gateway_jobs_retried_total": ("counter", ("destination", "kind")),
    "gateway_jobs_failed_total": ("counter", ("destination", "kind")),
    "gateway_jobs_dead_lettered_total": ("counter", ("destination", "kind")),
    "gateway_sends_reconciled_total": ("counter", ("destination", "landed")),
    "gateway_queue_depth": ("gauge", ("destination",)),
    "gateway_queue_dead": ("gauge", ("destination",)),
    "gateway_queue_oldest_age_seconds": ("gauge", ("destination",)),
    "gateway_delivery_latency_seconds": ("histogram", ("destination",)),
    "gateway_account_state": ("gauge", ("instance", "state")),
    "gateway_unrouted_messages": ("gauge", ("instance", "state")),
    "gateway_admin_rejected_total": ("counter", ()),
}


def test_standard_metrics_declares_every_family() -> None:
    m = standard_metrics()
    text = m.render()
    for name, (kind, labels) in STANDARD.items():
        assert f"# TYPE {name} {kind}\n" in text
        values = {label: "x" for label in labels}
        if kind == "histogram":
            m.observe(name, 0.2, **values)
        elif kind == "gauge":
            m.set(name, 1, **values)
        else:
            m.inc(name, **values)
    assert len(re.findall(r"^# TYPE ", text, re.M)) == len(STANDARD)
    assert_valid_exposition(m.render())


def test_latency_buckets_span_1ms_to_60s() -> None:
    assert LATENCY_BUCKETS[0] == 0.001
    assert LATENCY_BUCKETS[-1] == 60.0
    m = standard_metrics()
    m.observe("gateway_delivery_latency_seconds", 0.0005, destination="crm")
    m.observe("gateway_delivery_latency_seconds", 120, destination="crm")
    text = m.render()
    assert 'gateway_delivery_latency_seconds_bucket{destination="crm",le="0.001"} 1\n' in text
    assert 'gateway_delivery_latency_seconds_bucket{destination="crm",le="60"} 1\n' in text
    assert 'gateway_delivery_latency_seconds_bucket{destination="crm",le="+Inf"} 2\n' in text


def test_account_state_gauge_is_one_hot() -> None:
    m = standard_metrics()
    record_account_state(m, "wa", AccountStatus.NEEDS_QR)
    record_account_state(m, "wa", "connected")
    states = {
        s.value: m.value("gateway_account_state", instance="wa", state=s.value)
        for s in AccountStatus
    }
    assert states.pop("connected") == 1
    assert set(states.values()) == {0}


def test_queue_stats_refresh_gauges_and_zero_vanished_destinations() -> None:
    m = standard_metrics()
    record_queue_stats(
        m,
        [
            DestinationStats("crm", ready=3, dead=1, oldest_ready_at=90.0),
            DestinationStats("wa", 0, 0, None),
        ],
        now=100.0,
    )
    assert m.value("gateway_queue_depth", destination="crm") == 3
    assert m.value("gateway_queue_dead", destination="crm") == 1
    assert m.value("gateway_queue_oldest_age_seconds", destination="crm") == 10
    assert m.value("gateway_queue_oldest_age_seconds", destination="wa") == 0
    record_queue_stats(m, [DestinationStats("wa", 1, 0, 99.0)], now=100.0)
    assert m.value("gateway_queue_depth", destination="crm") == 0
    assert m.value("gateway_queue_depth", destination="wa") == 1


def test_content_type_is_the_0_0_4_text_format() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_hot_path_does_not_format_strings() -> None:
    # Series are keyed by the raw label tuple; rendering is where text is built.
    m = standard_metrics()
    m.inc("gateway_jobs_delivered_total", destination="crm", kind="send")
    family = m._families["gateway_jobs_delivered_total"]
    assert family.series == {("crm", "send"): 1.0}
