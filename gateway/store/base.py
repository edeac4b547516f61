"""The store interface: events, the job outbox with leased lanes, id maps, provider state.

Every backend (embedded SQLite, PostgreSQL) implements `Store` and passes the contract suite
in `gateway/store/contract.py`. Times are UNIX seconds (floats) passed in by the caller, so
tests drive time explicitly.

Ordering model: every job belongs to a *lane* (one conversation at one destination on one
route). A lane is leased to one worker at a time and its jobs are handed out as a prefix in
id order, so job n+1 of a conversation never starts before job n is finished, retried later
(which blocks the lane until then) or dead-lettered.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal

from gateway.models import JSON

JobKind = Literal["send", "ack", "status"]
JobState = Literal["ready", "dead"]


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue; `payload` is JSON the pipeline wrote and will read back."""

    kind: JobKind
    route: str
    source: str
    destination: str
    lane: str
    payload: JSON


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored. `sending_since` is set from the claim of an attempt until its outcome
    is recorded: set at claim time, it means an earlier attempt may have sent the job."""

    id: int
    kind: JobKind
    route: str
    source: str
    destination: str
    lane: str
    payload: JSON
    state: JobState
    attempts: int
    created_at: float
    available_at: float
    last_error: str | None = None
    sending_since: float | None = None
    dead_at: float | None = None
    #: The parked job this one replays (a replay makes a new job at its lane's tail).
    replay_of: int | None = None


# What the store announces to `subscribe` callbacks when shared state changed (see
# `versions`), instead of a destination name.
STATE_CHANGED = "@state"
# Reasons a message is held.
NO_ROUTE = "no route carries it"
BEHIND_HELD = "an earlier message of its conversation is held"
ROUTE_GONE = "its route was removed before it was delivered"


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One inbound event and the jobs it causes, committed together or not at all.

    `hold` keeps a message that no route carries (it is stored in `held`, not forgotten);
    `conversation` names the conversation of a message, edit or delete, so a message with
    jobs whose conversation already has held messages is held behind them instead (kept in
    order: it must not overtake them when a route appears).
    """

    instance: str
    dedupe_key: str
    event: JSON
    jobs: Sequence[NewJob] = ()
    hold: bool = False
    conversation: str | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """An accepted message waiting for a route, in arrival order (`id`).

    `event` is what `events` keeps: `{"event": ..., "target": ...}`. A held message older
    than the configured age becomes a dead letter: `dead_at` and `reason` are set.
    """

    id: int
    instance: str
    target: str | None
    conversation: str
    dedupe_key: str
    event: JSON
    held_at: float
    reason: str
    dead_at: float | None = None


@dataclass(frozen=True, slots=True)
class HeldStats:
    """Held (waiting) and dead-lettered unrouted messages per instance and target."""

    instance: str
    target: str | None
    held: int
    dead: int
    oldest_held_at: float | None


@dataclass(frozen=True, slots=True)
class IdMapping:
    """Source message id <-> destination message id, per route."""

    route: str
    source: str
    source_id: str
    destination: str
    destination_id: str
    conversation_id: str | None = None
    extra: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job that succeeded, with what it leaves behind (id map rows, follow-up jobs)."""

    job_id: int
    mappings: Sequence[IdMapping] = ()
    followups: Sequence[NewJob] = ()


JobStepKind = Literal["delivered", "retried", "parked", "replayed"]


@dataclass(frozen=True, slots=True)
class JobStep:
    """One recorded outcome in a job's life, kept after the job is gone (`job_history`).

    `attempt` counts the attempts so far (this one included); `started_at` is when the
    attempt began (its claim); for "replayed", `detail` is the id of the new job.
    `message` is the source message id the job carries, when its payload names one.
    """

    job_id: int
    step: JobStepKind
    at: float
    attempt: int
    kind: str
    route: str
    source: str
    destination: str
    lane: str
    created_at: float
    started_at: float | None = None
    detail: str | None = None
    message: str | None = None
    replay_of: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An accepted webhook event, as `find_events` lists it (without its payload)."""

    id: int
    instance: str
    dedupe_key: str
    received_at: float


@dataclass(frozen=True, slots=True)
class Activity:
    """Traffic in one time bucket, and the jobs waiting at its end (`activity`)."""

    start: float
    received: int
    delivered: int
    parked: int
    waiting: int


@dataclass(frozen=True, slots=True)
class DestinationStats:
    destination: str
    ready: int
    dead: int
    oldest_ready_at: float | None


@dataclass(frozen=True, slots=True)
class StoredRoute:
    name: str
    channel: str
    crm: str
    target: str | None
    direction: str


class Store(ABC):
    """What the core needs from persistence. All methods are safe to call concurrently."""

    url: str

    # lifecycle -------------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StoreError` if the store cannot answer now."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The migration number the store is at."""

    # inbound ---------------------------------------------------------------------------
    @abstractmethod
    async def ingest(self, items: Sequence[IngestItem], now: float) -> list[int | None]:
        """Insert each event unless its (instance, dedupe_key) is known, with its jobs.

        Returns the new event id, or None for a duplicate (whose jobs are not enqueued).
        Committed before it returns: the caller may answer the webhook afterwards.
        """

    @abstractmethod
    async def prune_events(self, before: float) -> int:
        """Forget events received before `before` (their dedupe keys go with them), and the
        job history recorded before it."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        """Add jobs that come from no webhook; returns their ids."""

    # delivery --------------------------------------------------------------------------
    @abstractmethod
    async def claim(
        self, destination: str, owner: str, limit: int, lease_seconds: float, now: float
    ) -> list[Job]:
        """Lease due lanes of `destination` and return up to `limit` of their ready jobs.

        Each lane contributes a prefix of its ready jobs in id order; lanes leased by someone
        else (lease not expired) or waiting for a retry time are skipped. A lease lasts until
        every job it handed out is finished or dead-lettered, one of them is retried (the rest
        then wait behind it), or it is released or expires: finishing a prefix job by job
        never lets another worker into the lane while the next job may be in flight.

        In the same transaction every job handed out is marked as attempted: `attempts` goes
        up by one and `sending_since` becomes `now`, so a crash at any point after the claim
        leaves it looking possibly sent. The returned `Job`s carry the values from *before*
        that mark: `sending_since` set means an earlier attempt may have sent the job, and
        `attempts` counts the attempts before this one. A job the caller then does not hand
        to a provider gets its mark back off through `release(..., unsent=...)`.
        """

    @abstractmethod
    async def finish(self, finished: Sequence[Finished], owner: str, now: float) -> bool:
        """Delete finished jobs, write their id maps and follow-ups, free their lanes.

        A job that is gone already (finished under an expired lease by someone else) is
        skipped with its follow-ups; a mapping whose (route, source, source_id) exists is kept.

        Returns True when a lane it freed has a job due now: one that came while the lane
        was leased, which no claim could take then (the caller sees that a slot claims it).
        """

    @abstractmethod
    async def retry(
        self,
        job_id: int,
        owner: str,
        available_at: float,
        error: str,
        now: float,
        *,
        possibly_sent_since: float | None = None,
    ) -> None:
        """Keep the job at its lane's head and block the lane until `available_at`.

        The claim's mark comes off (the attempt's outcome is known: it failed), unless
        `possibly_sent_since` is given: then an earlier attempt may have sent the job, and
        the next claim must see `sending_since` = that time (to ask the destination first).
        """

    @abstractmethod
    async def dead_letter(self, job_id: int, owner: str, reason: str, now: float) -> None:
        """Park the job with its reason; the rest of its lane proceeds."""

    @abstractmethod
    async def renew(self, owner: str, lanes: Sequence[str], until: float) -> None:
        """Extend `owner`'s leases of `lanes` to `until` (a long call must keep its lanes)."""

    @abstractmethod
    async def release(
        self, owner: str, lanes: Sequence[str], now: float, unsent: Sequence[int] = ()
    ) -> None:
        """Give back lane leases without finishing anything (shutdown, unprocessed jobs).

        `unsent` are ids of jobs that were claimed but never handed to a provider: in the
        same transaction, their claim's mark comes off (`attempts` down by one,
        `sending_since` cleared), so they are not taken for possibly sent. Only jobs still
        ready and marked are touched, and only while no other owner leases their lane (a
        new claim's mark is someone else's attempt); so undoing twice is harmless. `lanes`
        may be empty, to undo marks and keep the leases.
        """

    @abstractmethod
    async def next_due(self, destination: str, now: float) -> float | None:
        """When the earliest lane of `destination` becomes due (<= now: due already)."""

    @abstractmethod
    async def destinations_with_work(self, now: float) -> list[str]:
        """Destinations that have at least one lane with ready jobs."""

    @abstractmethod
    async def sending(self, destination: str, since: float) -> int:
        """How many send jobs of `destination` were handed out by a claim at or after
        `since` and have no recorded outcome yet (ready, `sending_since` >= `since`): sends
        that may be under way in any process sharing the store. Read-only.

        `since` leaves out old marks (a process that crashed mid-send, a retry waiting to
        ask whether an attempt landed): they are no provider call still running.
        """

    # id map and statuses ---------------------------------------------------------------
    @abstractmethod
    async def lookup_by_source(self, route: str, source: str, source_id: str) -> IdMapping | None:
        """The mapping of a message that `source` gave us, on `route`."""

    @abstractmethod
    async def lookup_by_destination(
        self, destination: str, destination_id: str
    ) -> IdMapping | None:
        """The mapping of a message we delivered to `destination` with that id."""

    @abstractmethod
    async def merge_status(self, instance: str, native_id: str, status: int, now: float) -> bool:
        """Store `status` for a message if it is higher than the stored one; True if it was."""

    # dead letters and admin ------------------------------------------------------------
    @abstractmethod
    async def dead_letters(
        self, *, limit: int = 100, destination: str | None = None, lane: str | None = None
    ) -> list[Job]:
        """Dead-lettered jobs, oldest first."""

    async def replay(
        self,
        *,
        job_ids: Sequence[int] = (),
        lane: str | None = None,
        since: float | None = None,
        until: float | None = None,
        now: float,
    ) -> int:
        """Make matching dead jobs ready again (attempts reset); returns how many.

        Filters combine; `since` and `until` bound `dead_at` inclusively; no filter: all.
        """
        pairs = await self.replay_jobs(
            job_ids=job_ids, lane=lane, since=since, until=until, now=now
        )
        return len(pairs)

    @abstractmethod
    async def replay_jobs(
        self,
        *,
        job_ids: Sequence[int] = (),
        lane: str | None = None,
        since: float | None = None,
        until: float | None = None,
        now: float,
    ) -> list[tuple[int, int]]:
        """`replay`, answering (parked job id, new job id) for each job it replayed.

        The new job records `replay_of`; the old one's history gets a "replayed" step.
        """

    # history (the console's trace and chart) --------------------------------------------
    @abstractmethod
    async def job_history(
        self,
        *,
        job_ids: Sequence[int] = (),
        message: str | None = None,
        lane_part: str | None = None,
        limit: int = 500,
    ) -> list[JobStep]:
        """Recorded steps of the given jobs, of jobs carrying source message `message`, or
        of jobs whose lane contains `lane_part` (a phone number); oldest first."""

    @abstractmethod
    async def find_jobs(self, text: str, limit: int = 100) -> list[Job]:
        """Jobs still stored (ready or parked) whose lane or payload contains `text`."""

    @abstractmethod
    async def find_events(self, text: str, since: float, limit: int = 50) -> list[StoredEvent]:
        """Events received since `since` whose dedupe key or payload contains `text`."""

    @abstractmethod
    async def activity(self, since: float, width: float, count: int) -> list[Activity]:
        """`count` buckets of `width` seconds from `since`: events received, jobs delivered
        and parked in each, and jobs waiting (ready) at each bucket's end."""

    @abstractmethod
    async def stats(self, now: float) -> list[DestinationStats]:
        """Queue depth, dead letters and oldest ready job per destination."""

    @abstractmethod
    async def get_job(self, job_id: int) -> Job | None:
        """One job by id, in any state."""

    # provider state --------------------------------------------------------------------
    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> JSON | None: ...

    @abstractmethod
    async def kv_put(self, namespace: str, key: str, value: JSON) -> None: ...

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> None: ...

    @abstractmethod
    async def kv_items(self, namespace: str, prefix: str = "") -> list[tuple[str, JSON]]: ...

    @abstractmethod
    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion on `name` for everyone sharing this store."""

    async def subscribe(self, callback: Callable[[str | None], None]) -> None:
        """Call `callback(destination)` when another process adds work for `destination`.

        None means "maybe any destination". A store used by one process has nobody else to
        hear from, so the default does nothing; the callback is dropped at `close()`.
        """
        return None

    # routes created at run time (e.g. linked from the Bitrix24 settings page) ----------
    @abstractmethod
    async def save_route(self, route: StoredRoute) -> None:
        """Create or replace a route; bumps the "routes" version in the same transaction."""

    @abstractmethod
    async def delete_route(self, name: str) -> None:
        """Delete a route (no error if absent); bumps the "routes" version likewise."""

    @abstractmethod
    async def load_routes(self) -> list[StoredRoute]: ...

    # shared state: versions every process checks --------------------------------------
    @abstractmethod
    async def versions(self) -> dict[str, int]:
        """The version of every scope of shared state that was ever changed.

        Scopes: "routes" (bumped by `save_route`/`delete_route`), "held" (messages held or
        released), and whatever callers `bump` ("accounts", "instance:{name}"). A process
        that caches a scope compares the version with the one its copy was read at; one
        small read covers every scope.
        """

    @abstractmethod
    async def bump(self, scopes: Sequence[str]) -> None:
        """Increase the version of `scopes` (after the change they cover was written)."""

    # held messages: accepted, no route yet ---------------------------------------------
    @abstractmethod
    async def held(
        self,
        *,
        limit: int = 100,
        instance: str | None = None,
        target: str | None = None,
        dead: bool = False,
        after: int = 0,
    ) -> list[HeldMessage]:
        """Held messages (or, with `dead`, expired ones) in id order, ids above `after`.

        `target` filters on the target only when `instance` is given too."""

    @abstractmethod
    async def held_stats(self) -> list[HeldStats]:
        """Counts of held and dead unrouted messages per (instance, target)."""

    @abstractmethod
    async def release_held(
        self, released: Sequence[tuple[int, Sequence[NewJob]]], now: float
    ) -> int:
        """Turn held messages into their jobs (none: the message is dropped on purpose,
        e.g. by a filter), in one transaction and in the order given; a held id that is
        gone or dead already is skipped. Returns how many were released."""

    @abstractmethod
    async def hold_job(self, job_id: int, owner: str, message: IngestItem, now: float) -> bool:
        """Take a leased job whose route is gone off the queue and hold its message instead
        (`message` as ingest would hold it, reason `ROUTE_GONE`), in one transaction, so it
        goes out again, in order, when a route for it appears. The job's history records
        it as parked. False, and nothing done, if the job is not ready any more."""

    @abstractmethod
    async def expire_held(self, before: float, reason: str, now: float) -> list[HeldMessage]:
        """Dead-letter held messages held since before `before`, with `reason`."""

    @abstractmethod
    async def replay_held(self, *, ids: Sequence[int] = (), now: float) -> int:
        """Hold dead unrouted messages again (all of them when `ids` is empty)."""
