"""A small server-rendered SVG chart: traffic and queue depth over the last hours.

Bars per bucket: received (webhooks accepted), delivered and parked jobs; a line: jobs
waiting at each bucket's end. No script; the same numbers are also given as a table for
screen readers and keyboard users (see overview.html).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

from gateway.store.base import Activity

HOURS = 6
BUCKETS = 12
WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 40, 24, 10
# Colours with at least 3:1 contrast on white (WCAG non-text contrast).
SERIES = (
    ("received", "#0b5cad"),
    ("delivered", "#1e6b33"),
    ("parked", "#a4161a"),
)
WAITING = "#7a4a00"


@dataclass(frozen=True, slots=True)
class Chart:
    hours: int
    svg: Markup
    buckets: list[Activity]

    def label(self, bucket: Activity) -> str:
        return _hhmm(bucket.start)


def render(buckets: list[Activity], t: Callable[..., str]) -> Chart:
    peak = max([1] + [max(b.received, b.delivered, b.parked, b.waiting) for b in buckets])
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(buckets))
    bar = slot / (len(SERIES) + 1)

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / peak

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        ' aria-labelledby="chart-svg-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-svg-title">{escape(t("chart", hours=HOURS))}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 10}" y2="{TOP + plot_h}"'
        ' stroke="#6b7682"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    points = []
    for index, bucket in enumerate(buckets):
        x0 = LEFT + index * slot + bar / 2
        for offset, (name, colour) in enumerate(SERIES):
            value = getattr(bucket, name)
            top = y(value)
            parts.append(
                f'<rect x="{x0 + offset * bar:.1f}" y="{top:.1f}" width="{bar:.1f}"'
                f' height="{TOP + plot_h - top:.1f}" fill="{colour}"/>'
            )
        points.append(f"{LEFT + (index + 0.5) * slot:.1f},{y(bucket.waiting):.1f}")
        if index % 2 == 0:
            parts.append(
                f'<text x="{LEFT + (index + 0.5) * slot:.1f}" y="{HEIGHT - 6}"'
                f' text-anchor="middle">{_hhmm(bucket.start)}</text>'
            )
    parts.append(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="{WAITING}"'
        ' stroke-width="2.5" stroke-dasharray="6 3"/>'
    )
    parts.append("</svg>")
    return Chart(HOURS, Markup("".join(parts)), buckets)  # noqa: S704 (numbers and escaped text)


def legend() -> list[tuple[str, str]]:
    """(catalogue key, colour) of each series, for the legend beside the chart."""
    return [(f"chart.{name}", colour) for name, colour in SERIES] + [("chart.depth", WAITING)]


def _hhmm(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M")
