"""A small Prometheus registry rendering the text exposition format 0.0.4, with no dependency.

`inc` and `observe` run once or more per message, so they only look up a dict keyed by the
tuple of label values; names, escaping and number formatting happen in `render`.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, Literal

from gateway.models import AccountStatus
from gateway.store.base import DestinationStats, HeldStats

log = logging.getLogger("gateway")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: 1 ms to 60 s: a delivery is an HTTP call to a provider, usually 50 ms to a few seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip

Kind = Literal["counter", "gauge", "histogram"]
LabelKey = tuple[str, ...]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class _Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, size: int) -> None:
        # One slot per finite bucket plus +Inf, not cumulative: cumulated in `render`.
        self.counts = [0] * (size + 1)
        self.sum = 0.0
        self.count = 0


class _Family:
    __slots__ = (
        *("buckets", "help", "histograms", "kind", "labelnames", "name", "series", "shared"),
    )

    def __init__(
        self,
        name: str,
        help: str,
        kind: Kind,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = (),
        *,
        shared: bool = False,
    ) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self.labelnames = labelnames
        self.buckets = buckets
        #: A gauge every process computes alike from the store they share (`merged`).
        self.shared = shared
        self.series: dict[LabelKey, float] = {}
        self.histograms: dict[LabelKey, _Histogram] = {}
        if not labelnames:
            # A family without labels has exactly one series; expose it from the start so a
            # counter that never moved reads 0 instead of being absent.
            if kind == "histogram":
                self.histograms[()] = _Histogram(len(buckets))
            else:
                self.series[()] = 0.0

    @property
    def shape(self) -> tuple[object, ...]:
        return (self.kind, self.labelnames, self.buckets)

    def key(self, labels: Mapping[str, str]) -> LabelKey:
        try:
            if len(labels) == len(self.labelnames):
                return tuple([labels[label] for label in self.labelnames])
        except KeyError:
            pass
        raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")


class Metrics:
    """Metric families declared once, updated by name, rendered for `/metrics`."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    # declaring ----------------------------------------------------------------------------
    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self._declare(_Family(name, help, "counter", self._labels(name, labelnames)))

    def gauge(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, shared: bool = False
    ) -> None:
        """`shared`: every process of the gateway computes this gauge alike from the store
        (queue depth, account states); a merge keeps this process's own (`merged`)."""
        family = _Family(name, help, "gauge", self._labels(name, labelnames), shared=shared)
        self._declare(family)

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        labels = self._labels(name, labelnames)
        if "le" in labels:
            raise ValueError(f"{name}: a histogram cannot have a label named 'le'")
        bounds = tuple(float(b) for b in buckets if b != math.inf)
        if not bounds or not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"{name}: buckets must be finite numbers")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"{name}: buckets must be strictly increasing")
        self._declare(_Family(name, help, "histogram", labels, bounds))

    def _labels(self, name: str, labelnames: Sequence[str]) -> tuple[str, ...]:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        if isinstance(labelnames, str):
            raise TypeError(f"{name}: labelnames must be a sequence of names, not a string")
        labels = tuple(labelnames)
        for label in labels:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"{name}: invalid label name {label!r}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"{name}: duplicate label names in {labels}")
        return labels

    def _declare(self, family: _Family) -> None:
        known = self._families.get(family.name)
        if known is None:
            self._families[family.name] = family
            return
        # Declaring the same family twice is harmless (two plugins sharing a metric);
        # declaring it with another shape would make one of them write nonsense.
        if known.shape != family.shape:
            raise ValueError(f"metric {family.name} is already declared differently")

    def __contains__(self, name: object) -> bool:
        return name in self._families

    # updating -----------------------------------------------------------------------------
    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add `value` to a counter or gauge."""
        family = self._family(name)
        if family.kind == "histogram" or (family.kind == "counter" and value < 0):
            raise ValueError(f"{name}: cannot add {value} to a {family.kind}")
        key = family.key(labels) if labels or family.labelnames else ()
        series = family.series
        series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        family = self._family(name)
        if family.kind != "gauge":
            raise ValueError(f"{name}: only gauges can be set, this is a {family.kind}")
        family.series[family.key(labels) if labels or family.labelnames else ()] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Count `value` into a histogram."""
        family = self._family(name)
        if family.kind != "histogram":
            raise ValueError(f"{name}: only histograms observe values, this is a {family.kind}")
        key = family.key(labels) if labels or family.labelnames else ()
        histogram = family.histograms.get(key)
        if histogram is None:
            histogram = family.histograms[key] = _Histogram(len(family.buckets))
        # bisect_left puts a value equal to a bound into that bound's bucket (le is <=).
        histogram.counts[bisect_left(family.buckets, value)] += 1
        histogram.sum += value
        histogram.count += 1

    def remove(self, name: str, **labels: str) -> None:
        """Forget one series (a destination or instance that no longer exists)."""
        family = self._family(name)
        key = family.key(labels)
        family.series.pop(key, None)
        family.histograms.pop(key, None)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a counter or gauge series (0 if never touched)."""
        family = self._family(name)
        return family.series.get(family.key(labels), 0.0)

    def histogram_counts(self, name: str, **labels: str) -> tuple[int, float]:
        """(count, sum) of a histogram series."""
        family = self._family(name)
        histogram = family.histograms.get(family.key(labels))
        return (0, 0.0) if histogram is None else (histogram.count, histogram.sum)

    def _family(self, name: str) -> _Family:
        try:
            return self._families[name]
        except KeyError:
            raise KeyError(f"metric {name!r} is not declared") from None

    # between processes ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Every family and series as JSON, for another process to merge (`merged`)."""
        return {
            name: {
                "kind": f.kind,
                "help": f.help,
                "labels": list(f.labelnames),
                "buckets": list(f.buckets),
                "series": [[list(k), v] for k, v in f.series.items()],
                "histograms": [
                    [list(k), h.counts, h.sum, h.count] for k, h in f.histograms.items()
                ],
            }
            for name, f in self._families.items()
        }

    def merged(self, snapshot: Mapping[str, Any]) -> Metrics:
        """A copy of this registry with another process's `snapshot` added, so that one
        scrape shows the gateway as one process would.

        Counters and histograms are summed series by series (name and labels): each process
        counts its own events. Gauges are summed too (what each process holds adds up),
        except `shared` ones, which every process computes alike from the store: summing
        those would count each job twice, so this process's own stand. A family this
        process lacks is taken as it comes; one declared differently here is left out.
        """
        merged = Metrics()
        for name, family in self._families.items():
            merged._families[name] = _copy(family)
        for name, data in snapshot.items():
            try:
                _add(merged, name, data)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("metric %s of the delivery process left out: %s", name, exc)
        return merged

    # rendering ----------------------------------------------------------------------------
    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._families):
            family = self._families[name]
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            if family.kind == "histogram":
                _render_histogram(family, lines)
                continue
            for key, value in sorted(family.series.items()):
                lines.append(f"{name}{_labels(family.labelnames, key)} {_number(value)}")
        lines.append("")
        return "\n".join(lines)


def _copy(family: _Family) -> _Family:
    copy = _Family(
        family.name,
        family.help,
        family.kind,
        family.labelnames,
        family.buckets,
        shared=family.shared,
    )
    copy.series = dict(family.series)
    for key, histogram in family.histograms.items():
        twin = copy.histograms[key] = _Histogram(len(family.buckets))
        twin.counts, twin.sum, twin.count = list(histogram.counts), histogram.sum, histogram.count
    return copy


def _add(into: Metrics, name: str, data: Mapping[str, Any]) -> None:
    """Add one family of a snapshot to `into` (see `Metrics.merged`)."""
    kind, labels = data["kind"], tuple(str(label) for label in data["labels"])
    if name not in into:
        if kind == "histogram":
            into.histogram(name, str(data["help"]), labels, data["buckets"])
        elif kind in ("counter", "gauge"):
            into._declare(_Family(name, str(data["help"]), kind, into._labels(name, labels)))
        else:
            raise ValueError(f"unknown kind {kind!r}")
    family = into._family(name)
    buckets = tuple(float(b) for b in data["buckets"])
    if (family.kind, family.labelnames, family.buckets) != (kind, labels, buckets):
        raise ValueError("declared differently in the two processes")
    if family.shared:
        return
    width = len(labels)
    for key, value in data["series"]:
        series = tuple(str(v) for v in key)
        if len(series) != width:
            raise ValueError(f"series {key} does not match the labels {labels}")
        family.series[series] = family.series.get(series, 0.0) + float(value)
    for key, counts, total, count in data["histograms"]:
        series = tuple(str(v) for v in key)
        if len(series) != width or len(counts) != len(buckets) + 1:
            raise ValueError(f"histogram series {key} does not match the family")
        histogram = family.histograms.get(series)
        if histogram is None:
            histogram = family.histograms[series] = _Histogram(len(buckets))
        histogram.counts = [a + int(b) for a, b in zip(histogram.counts, counts, strict=True)]
        histogram.sum += float(total)
        histogram.count += int(count)


def _render_histogram(family: _Family, lines: list[str]) -> None:
    name = family.name
    bounds = [*(_number(b) for b in family.buckets), "+Inf"]
    for key, histogram in sorted(family.histograms.items()):
        total = 0
        for bound, count in zip(bounds, histogram.counts, strict=True):
            total += count
            labels = _labels((*family.labelnames, "le"), (*key, bound))
            lines.append(f"{name}_bucket{labels} {total}")
        labels = _labels(family.labelnames, key)
        lines.append(f"{name}_sum{labels} {_number(histogram.sum)}")
        lines.append(f"{name}_count{labels} {histogram.count}")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_value(str(v))}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def standard_metrics() -> Metrics:
    """The gateway's own families, declared with the names dashboards and alerts use.

    The gauges are `shared`: each process computes them from the store (the queue and
    held messages at every scrape, account states from the shared state)."""
    m = Metrics()
    m.counter("gateway_events_received_total", "Inbound events committed.", ["instance"])
    m.counter("gateway_events_duplicate_total", "Inbound events already known.", ["instance"])
    m.counter("gateway_webhooks_rejected_total", "Webhooks refused.", ["instance", "reason"])
    for name, text in (
        ("gateway_jobs_delivered_total", "Jobs that reached their destination."),
        ("gateway_jobs_retried_total", "Job attempts that failed for now and were rescheduled."),
        ("gateway_jobs_failed_total", "Job attempts that failed with a permanent error."),
        ("gateway_jobs_dead_lettered_total", "Jobs parked as dead letters."),
    ):
        m.counter(name, text, ["destination", "kind"])
    m.counter(
        "gateway_sends_reconciled_total",
        "Sends of unknown outcome the destination was asked about (landed: yes or no).",
        ["destination", "landed"],
    )
    m.gauge("gateway_queue_depth", "Ready jobs per destination.", ["destination"], shared=True)
    m.gauge(
        "gateway_queue_dead", "Dead-lettered jobs per destination.", ["destination"], shared=True
    )
    m.gauge(
        "gateway_queue_oldest_age_seconds",
        "Age of the oldest ready job.",
        ["destination"],
        shared=True,
    )
    m.histogram("gateway_delivery_latency_seconds", "Enqueue-to-delivery time.", ["destination"])
    m.gauge(
        "gateway_account_state",
        "1 for each account's current state.",
        ["instance", "state"],
        shared=True,
    )
    m.gauge(
        "gateway_unrouted_messages",
        "Accepted messages no route carries: held (waiting for one) or dead (held too long).",
        ["instance", "state"],
        shared=True,
    )
    m.counter("gateway_admin_rejected_total", "Admin API requests refused (no or wrong token).")
    return m


def record_account_state(metrics: Metrics, instance: str, state: AccountStatus | str) -> None:
    """Set `gateway_account_state` to 1 for `state` and 0 for every other state."""
    current = AccountStatus(state)
    for status in AccountStatus:
        metrics.set(
            "gateway_account_state",
            1.0 if status is current else 0.0,
            instance=instance,
            state=status.value,
        )


def record_unrouted(metrics: Metrics, stats: Iterable[HeldStats]) -> None:
    """Refresh `gateway_unrouted_messages` from `Store.held_stats`; emptied ones read 0."""
    totals: dict[tuple[str, str], float] = {}
    for instance, state in list(metrics._family("gateway_unrouted_messages").series):
        totals[(instance, state)] = 0.0
    for item in stats:
        for state, count in (("held", item.held), ("dead", item.dead)):
            key = (item.instance, state)
            totals[key] = totals.get(key, 0.0) + count
    for (instance, state), total in totals.items():
        metrics.set("gateway_unrouted_messages", total, instance=instance, state=state)


def record_queue_stats(metrics: Metrics, stats: Iterable[DestinationStats], now: float) -> None:
    """Refresh the queue gauges from `Store.stats`; destinations that emptied read 0."""
    seen: set[str] = set()
    for item in stats:
        seen.add(item.destination)
        age = 0.0 if item.oldest_ready_at is None else max(0.0, now - item.oldest_ready_at)
        metrics.set("gateway_queue_depth", item.ready, destination=item.destination)
        metrics.set("gateway_queue_dead", item.dead, destination=item.destination)
        metrics.set("gateway_queue_oldest_age_seconds", age, destination=item.destination)
    for name in ("gateway_queue_depth", "gateway_queue_dead", "gateway_queue_oldest_age_seconds"):
        for (destination,) in list(metrics._family(name).series):
            if destination not in seen:
                metrics.set(name, 0.0, destination=destination)
