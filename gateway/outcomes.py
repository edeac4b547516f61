"""What delivery decides about jobs: the retry policy, the reasons given for parking, how
one job's outcome is judged (`Judge`), and the outcomes of one batch (`Results`) as
`Deliverer` gathers them before recording."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import AmbiguousError, DeliveryError, TemporaryError, Throttled
from gateway.models import Message
from gateway.planning import ack_job
from gateway.providers import Outcome, Outgoing, Provider, Route, Sent
from gateway.store.base import Finished, IdMapping, IngestItem, Job, NewJob

#: How much of a message's text the id map keeps, to show it when the message is quoted.
QUOTE_PREVIEW = 200

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


class Judge:
    """Turns one job's outcome into what its batch records: finished (with its id map row
    and the source's ack), retried with backoff, held until the destination can be asked
    whether it landed, or parked with the reason (and a failure ack)."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        retry: RetryPolicy,
        clock: Callable[[], float],
    ) -> None:
        self.providers = providers
        self.retry = retry
        self.clock = clock

    def apply(
        self,
        job: Job,
        route: Route,
        outcome: Outcome,
        results: Results,
        item: object | None = None,
        started: float | None = None,
    ) -> None:
        if outcome is None or isinstance(outcome, Sent):
            results.finished.append(self.finished(job, route, outcome, item))
            return
        attempts = job.attempts + 1
        destination = job.destination
        capabilities = self.providers[destination].capabilities
        ambiguous = isinstance(outcome, AmbiguousError) and job.kind == "send"
        if ambiguous and not capabilities.idempotent_sends and capabilities.finds_sent:
            # Ask the destination once it has settled; until then the job stays marked.
            since = started if started is not None else self.clock()
            at = max(self.clock(), since + capabilities.settle_seconds)
            results.holds.append((job, at, str(outcome), since))
        elif ambiguous and not capabilities.idempotent_sends:
            results.dead.append((job, AMBIGUOUS_REASON.format(destination=destination)))
            self.failure_ack(job, route, outcome, results)
        elif isinstance(outcome, Throttled) or (
            isinstance(outcome, TemporaryError) and attempts < self.retry.max_attempts
        ):
            delay = self.retry.delay(attempts, outcome.retry_after)
            results.retries.append((job, self.clock() + delay, str(outcome)))
        else:
            reason = str(outcome)
            if isinstance(outcome, TemporaryError):
                reason = f"gave up after {attempts} attempts: {outcome}"
            results.dead.append((job, reason))
            self.failure_ack(job, route, outcome, results)

    def finished(
        self, job: Job, route: Route, outcome: Sent | None, item: object | None
    ) -> Finished:
        if job.kind != "send" or not isinstance(item, Outgoing):
            return Finished(job.id)
        event = item.event
        mappings: list[IdMapping] = []
        if outcome is not None and isinstance(event, Message):
            mappings.append(
                IdMapping(
                    route=route.name,
                    source=job.source,
                    source_id=event.native_id,
                    destination=job.destination,
                    destination_id=outcome.native_id,
                    conversation_id=event.conversation_id,
                    extra={
                        "source": dict(event.extra),
                        "destination": dict(outcome.extra),
                        "text": event.text[:QUOTE_PREVIEW],
                    },
                )
            )
        followups: list[NewJob] = []
        if self.wants_acks(job.source):
            delivered = outcome.native_id if outcome is not None else None
            followups.append(ack_job(route, job.source, job.payload, delivered_id=delivered))
        return Finished(job.id, mappings=mappings, followups=followups)

    def failure_ack(self, job: Job, route: Route, error: DeliveryError, results: Results) -> None:
        if job.kind == "send" and self.wants_acks(job.source):
            detail = {"code": error.code, "text": error.text}
            results.followups.append(ack_job(route, job.source, job.payload, error=detail))

    def wants_acks(self, instance: str) -> bool:
        provider = self.providers.get(instance)
        return provider is not None and provider.capabilities.wants_acks
