"""Trace a message: webhook received -> job(s) -> each attempt -> delivered ids, with times.

The query is a phone number (digits, matched inside conversation lanes), a message id
(the provider's, matched in job history, stored jobs and received events) or `job:N`.
Replays are followed both ways, so a parked job and the job that replayed it show together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.store.base import Job, JobStep, StoredEvent

if TYPE_CHECKING:
    from gateway.store.base import Store

#: How far back received webhooks are searched (the job history has no such bound).
EVENTS_WINDOW = 7 * 86400.0
_PHONE = re.compile(r"\+?[\d\s().-]{7,}")
_JOB = re.compile(r"(?:job:|#)\s*(\d{1,18})", re.IGNORECASE)


@dataclass(slots=True)
class Moment:
    at: float
    step: str  # a catalogue key: trace.queued, trace.attempt, trace.delivered, ...
    detail: str = ""
    attempt: int | None = None


@dataclass(slots=True)
class TracedJob:
    id: int
    kind: str
    route: str
    destination: str
    state: str  # trace.state.*: waiting, parked, delivered, replayed
    replay_of: int | None = None
    replayed_as: int | None = None
    message: str | None = None
    moments: list[Moment] = field(default_factory=list)


@dataclass(slots=True)
class Trace:
    query: str
    by: str  # phone, message or job
    events: list[StoredEvent]
    jobs: list[TracedJob]


def parse(query: str) -> tuple[str, str]:
    """(by, key): what the query is and what to look for."""
    text = query.strip()
    job = _JOB.fullmatch(text)
    if job:
        return "job", job[1]
    if _PHONE.fullmatch(text):
        return "phone", re.sub(r"\D", "", text)
    return "message", text


async def trace(store: Store, query: str, now: float, limit: int = 50) -> Trace:
    by, key = parse(query)
    steps: list[JobStep] = []
    live: dict[int, Job] = {}
    if by == "job":
        steps = await store.job_history(job_ids=[int(key)])
        found = await store.get_job(int(key))
        if found is not None:
            live[found.id] = found
    else:
        if by == "phone":
            steps = await store.job_history(lane_part=key)
        else:
            steps = await store.job_history(message=key)
        live = {job.id: job for job in await store.find_jobs(key, limit)}
    steps, live = await _follow_replays(store, steps, live)
    messages = {s.message for s in steps if s.message} | {_message(j) for j in live.values()}
    messages.discard(None)
    events: dict[int, StoredEvent] = {}
    for text in [key] if by != "job" else sorted(m for m in messages if m):
        for event in await store.find_events(text, now - EVENTS_WINDOW, limit):
            events[event.id] = event
    jobs = await _assemble(store, steps, live)
    return Trace(query, by, sorted(events.values(), key=lambda e: e.received_at), jobs[:limit])


async def _follow_replays(
    store: Store, steps: list[JobStep], live: dict[int, Job]
) -> tuple[list[JobStep], dict[int, Job]]:
    known = {s.job_id for s in steps} | set(live)
    for _ in range(5):
        linked = {int(s.detail or "0") for s in steps if s.step == "replayed"} - {0}
        linked |= {s.replay_of for s in steps if s.replay_of} | {
            j.replay_of for j in live.values() if j.replay_of
        }
        wanted = sorted(i for i in linked if i is not None and i not in known)
        if not wanted:
            break
        known.update(wanted)
        steps = steps + await store.job_history(job_ids=wanted)
        for job_id in wanted:
            found = await store.get_job(job_id)
            if found is not None:
                live[job_id] = found
    unique = {(s.job_id, s.step, s.at): s for s in steps}
    return sorted(unique.values(), key=lambda s: (s.at, s.job_id)), live


async def _assemble(store: Store, steps: list[JobStep], live: dict[int, Job]) -> list[TracedJob]:
    jobs: dict[int, TracedJob] = {}
    for step in steps:
        job = jobs.get(step.job_id)
        if job is None:
            job = jobs[step.job_id] = TracedJob(
                step.job_id, step.kind, step.route, step.destination, "trace.state.waiting",
                replay_of=step.replay_of, message=step.message,
            )  # fmt: skip
            job.moments.append(Moment(step.created_at, "trace.queued"))
        if step.started_at is not None:
            job.moments.append(Moment(step.started_at, "trace.attempt", attempt=step.attempt))
        detail = step.detail or ""
        if step.step == "delivered":
            job.state = "trace.state.delivered"
            mapped = None
            if step.message:
                mapped = await store.lookup_by_source(step.route, step.source, step.message)
            detail = mapped.destination_id if mapped is not None else ""
        elif step.step == "replayed":
            job.state = "trace.state.replayed"
            job.replayed_as = int(detail) if detail.isdigit() else None
        elif step.step == "parked":
            job.state = "trace.state.parked"
        key = f"trace.{step.step}" if detail or step.step != "delivered" else "trace.delivered.bare"
        job.moments.append(Moment(step.at, key, detail, step.attempt))
    for found in live.values():
        job = jobs.get(found.id)
        if job is None:
            job = jobs[found.id] = TracedJob(
                found.id, found.kind, found.route, found.destination, "trace.state.waiting",
                replay_of=found.replay_of, message=_message(found),
            )  # fmt: skip
            job.moments.append(Moment(found.created_at, "trace.queued"))
        job.state = "trace.state.parked" if found.state == "dead" else "trace.state.waiting"
        if found.sending_since is not None and found.state == "ready":
            job.moments.append(Moment(found.sending_since, "trace.attempt", attempt=found.attempts))
    for job in jobs.values():
        job.moments.sort(key=lambda m: m.at)
    return sorted(jobs.values(), key=lambda j: j.id)


def _message(job: Job) -> str | None:
    payload = job.payload
    event = payload.get("event") if isinstance(payload, dict) else None
    native = event.get("native_id") if isinstance(event, dict) else None
    return native if isinstance(native, str) else None
