"""Observations: what the pipeline reports to logs, metrics and the `observe` hook."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ObservationType = Literal[
    "accepted",  # an inbound event was committed
    "held",  # an accepted message no route carries was kept for the route that will
    "duplicate",  # an inbound event was already known; no second effect
    "rejected",  # a webhook was refused (bad input or failed authentication)
    "delivered",  # a job reached its destination
    "retried",  # a job failed for now and was scheduled again
    "dead_lettered",  # a job was parked for good (permanent error or retries exhausted)
    "reconciled",  # the destination said whether a send of unknown outcome had landed
    "replayed",  # dead letters were made ready again
    "account_state",  # a channel or CRM account changed state
]


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing that happened, with the ids needed to follow a message through the logs."""

    type: ObservationType
    instance: str | None = None
    route: str | None = None
    message_id: str | None = None
    job_id: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
