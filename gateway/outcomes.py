"""What delivery decides about jobs: the retry policy, the reasons given for parking, and
the outcomes of one batch (`Results`) as `Deliverer` gathers them before recording."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store.base import Finished, IngestItem, Job, NewJob

AMBIGUOUS_REASON = (
    "the outcome of sending is unknown (the gateway stopped or the call timed out after the "
    "request left), and {destination} cannot recognise a resend, so it was not resent "
    "automatically: check the conversation and replay this job if the message did not arrive"
)
UNANSWERED_REASON = (
    "the outcome of sending is unknown (the gateway stopped or the call timed out after the "
    "request left), and {destination} could not tell whether the message arrived ({detail}), "
    "so it was not resent automatically: check the conversation and replay this job if the "
    "message did not arrive"
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a provider's `retry_after` wins when given."""

    max_attempts: int = 10
    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.2

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        raw = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts - 1))
        return raw * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass(slots=True)
class Results:
    """What became of each job of one claimed batch, recorded together at its end."""

    finished: list[Finished] = dataclasses.field(default_factory=list)
    retries: list[tuple[Job, float, str]] = dataclasses.field(default_factory=list)
    #: Retries of jobs an earlier attempt may have sent: (job, at, error, attempt began).
    holds: list[tuple[Job, float, str, float]] = dataclasses.field(default_factory=list)
    dead: list[tuple[Job, str]] = dataclasses.field(default_factory=list)
    followups: list[NewJob] = dataclasses.field(default_factory=list)
    #: Sends whose route is gone: their messages are held again (`unrouted.route_gone`).
    unrouted: list[tuple[Job, IngestItem]] = dataclasses.field(default_factory=list)
    #: Live jobs not handed to a provider (yet) that still carry their claim's mark.
    unsent: set[int] = dataclasses.field(default_factory=set)

    def decided(self) -> set[int]:
        ids = {f.job_id for f in self.finished}
        ids.update(job.id for job, _ in self.dead)
        ids.update(job.id for job, _, _ in self.retries)
        ids.update(job.id for job, _, _, _ in self.holds)
        ids.update(job.id for job, _ in self.unrouted)
        return ids


class Held:
    """Per lane, the first job (in the order claimed, which is the lane's order) waiting for a
    retry: what comes after it waits too; what comes before it (an ack claimed ahead of a
    held send) still goes."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.rank = {job.id: n for n, job in enumerate(jobs)}
        self.lanes: dict[str, int] = {}

    def add(self, job: Job) -> None:
        rank = self.rank[job.id]
        self.lanes[job.lane] = min(rank, self.lanes.get(job.lane, rank))

    def free(self, job: Job) -> bool:
        return self.rank[job.id] < self.lanes.get(job.lane, len(self.rank))


def reorder_wait(job: Job, window: float, now: float) -> float | None:
    """Until when a first attempt at a message waits (`workers.reorder_window`): until
    `window` after the customer wrote it, and at most `window` after it arrived, so an older
    message still on its way can overtake it. None: it goes now."""
    if window <= 0 or job.kind != "send" or job.attempts or job.sending_since is not None:
        return None
    event = job.payload.get("event", {}) if isinstance(job.payload, dict) else {}
    written = event.get("timestamp") if event.get("kind") == "message" else None
    if isinstance(written, bool) or not isinstance(written, int | float):
        return None
    until = min(float(written), job.created_at) + window
    return until if until > now else None
