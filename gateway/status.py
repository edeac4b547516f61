"""What needs a person, on one screen: `gateway status` and `GET /admin/status`.

Read from the store alone (what every process shares), so it works beside running gateway
processes and with none running:

* unrouted messages: held for a route that does not exist (yet), and those held too long;
* parked jobs: dead letters per destination;
* instances whose account is not connected (as the gateway processes last recorded);
* what each provider finds wrong in its stored state (`Provider.stored_problems`: for
  Bitrix24, portals not installed or needing a reinstall, routes to a portal that is not
  installed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.instances import InstanceState
from gateway.models import AccountStatus
from gateway.providers import Provider, Route
from gateway.settings import GatewaySettings
from gateway.store.base import DestinationStats, HeldStats, Store

ACCOUNTS = "accounts"


@dataclass(frozen=True, slots=True)
class StatusReport:
    now: float
    unrouted: list[HeldStats] = field(default_factory=list)
    parked: list[DestinationStats] = field(default_factory=list)
    not_connected: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return bool(self.unrouted or self.parked or self.not_connected or self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "needs_attention": self.needs_attention,
            "unrouted": [
                {
                    "instance": s.instance,
                    "target": s.target,
                    "held": s.held,
                    "dead": s.dead,
                    "oldest_held_at": s.oldest_held_at,
                }
                for s in self.unrouted
            ],
            "parked": [{"destination": s.destination, "dead": s.dead} for s in self.parked],
            "not_connected": [
                {"instance": i, "state": state, "detail": detail}
                for i, state, detail in self.not_connected
            ],
            "problems": [{"instance": i, "problem": text} for i, text in self.problems],
        }


async def gather(
    settings: GatewaySettings,
    store: Store,
    providers: Mapping[str, type[Provider]],
    routes: Sequence[Route],
    now: float,
) -> StatusReport:
    unrouted = [s for s in await store.held_stats() if s.held or s.dead]
    parked = [s for s in await store.stats(now) if s.dead]
    states = dict(await store.kv_items(ACCOUNTS))
    not_connected: list[tuple[str, str, str]] = []
    problems: list[tuple[str, str]] = []
    for name, instance in sorted(settings.instances.items()):
        recorded = states.get(name)
        if not isinstance(recorded, dict):
            unseen = "no state recorded yet: is the gateway running?"
            not_connected.append((name, "unknown", unseen))
        elif recorded.get("status") != AccountStatus.CONNECTED.value:
            detail = recorded.get("detail")
            not_connected.append(
                (name, str(recorded.get("status")), detail if isinstance(detail, str) else "")
            )
        cls = providers.get(instance.provider)
        if cls is not None:
            state = InstanceState(store, f"instance:{name}")
            for text in await cls.stored_problems(name, state, routes):
                problems.append((name, text))
    return StatusReport(now, unrouted, parked, not_connected, problems)


def render(report: StatusReport) -> str:
    """The report as a screen of text."""
    lines: list[str] = []
    if not report.needs_attention:
        return "nothing needs attention: no unrouted messages, no parked jobs, all connected"
    if report.unrouted:
        lines.append("Unrouted messages (no route carries them; delivered once one does):")
        for s in report.unrouted:
            where = f"{s.instance} {s.target}" if s.target else s.instance
            age = _age(report.now, s.oldest_held_at)
            dead = f", {s.dead} held too long (parked)" if s.dead else ""
            lines.append(f"  {where}: {s.held} held{age}{dead}")
        lines.append("  fix: link the number or line (Bitrix24 settings page, or [routes]);")
        lines.append("  parked ones: POST /admin/unrouted/replay")
    if report.parked:
        lines.append("Parked jobs (dead letters; `gateway dead-letters`, `gateway replay`):")
        lines.extend(f"  {s.destination}: {s.dead}" for s in report.parked)
    if report.not_connected:
        lines.append("Instances not connected:")
        for name, state, detail in report.not_connected:
            lines.append(f"  {name}: {state}" + (f" ({detail})" if detail else ""))
    if report.problems:
        lines.append("Problems found in stored state:")
        lines.extend(f"  {name}: {text}" for name, text in report.problems)
    return "\n".join(lines)


def _age(now: float, since: float | None) -> str:
    if since is None:
        return ""
    seconds = max(0.0, now - since)
    when = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f", oldest since {when} ({_duration(seconds)} ago)"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
