"""Workers that take jobs from the outbox and hand them to destination providers.

Each destination instance gets `concurrency` slots. A slot leases due lanes (conversations)
of its destination, up to the provider's `max_batch` jobs, calls the provider once per job
kind, and records every outcome: finished (with id map rows and follow-up acks), retried
with backoff, or dead-lettered with the reason. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from gateway import shaping
from gateway.aio import stop_tasks, wait_event
from gateway.errors import (
    AmbiguousError,
    DeliveryError,
    TemporaryError,
)
from gateway.items import Items, defer_references
from gateway.models import Message
from gateway.observe import Observation
from gateway.outcomes import (
    AMBIGUOUS_REASON,
    UNANSWERED_REASON,
    Held,
    Judge,
    Results,
    RetryPolicy,
    reorder_wait,
)
from gateway.providers import (
    NotLanded,
    Outgoing,
    Provider,
    Route,
    Sent,
)
from gateway.store.base import Finished, Job, Store
from gateway.unrouted import hold_jobs, route_gone

log = logging.getLogger("gateway.delivery")


class Deliverer:
    """Runs the delivery slots of every destination instance in this process."""

    def __init__(
        self,
        *,
        store: Store,
        providers: Mapping[str, Provider],
        routes: Callable[[], Mapping[str, Route]],
        retry: RetryPolicy,
        concurrency: int,
        lease_seconds: float,
        poll_interval: float,
        clock: Callable[[], float],
        notify: Callable[[Observation], None],
        owner: str,
        reorder_window: float = 0.0,
    ) -> None:
        self.store = store
        self.providers = providers
        self.routes = routes
        self.retry_policy = retry
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.reorder_window = reorder_window
        self.clock = clock
        self.notify = notify
        self.owner = owner
        self.items = Items(store, providers, lambda: self.clock())
        self.judge = Judge(providers, retry, lambda: self.clock())
        # One event per slot, and per destination the slots that will claim before they
        # sleep: a wake rouses one of those, not all, since one claim takes every due lane
        # up to its batch size and the other slots would only claim nothing.
        self._wakeups: dict[str, list[asyncio.Event]] = {name: [] for name in providers}
        self._armed: dict[str, list[asyncio.Event]] = {name: [] for name in providers}
        # Per destination, one poller keeps the clock (next due time); see `_poll`.
        self._pokes: dict[str, asyncio.Event] = {name: asyncio.Event() for name in providers}
        # Per destination, wakes that found no armed slot (every slot was delivering): a
        # slot back from a batch claims again only if one came (or its batch was full).
        self._unheard: dict[str, int] = dict.fromkeys(providers, 0)
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    def wake(self, destination: str | None = None) -> None:
        """Tell a slot of `destination` that work is waiting (with no destination: have
        every destination's poller look at once). With no slot armed, all of them are
        delivering and each claims again when done, after the commit this wake follows, so
        nothing is missed."""
        if destination is None:
            for poke in self._pokes.values():
                poke.set()
        elif armed := self._armed.get(destination):
            armed.pop().set()
        elif destination in self._unheard:
            self._unheard[destination] += 1

    def idle_slots(self, destination: str) -> int:
        """Slots of `destination` waiting for work (for tests and the admin view)."""
        return len(self._armed.get(destination, ()))

    async def start(self) -> None:
        self._running = True
        for name in self.providers:
            for slot in range(self.concurrency):
                # Each slot is its own lease owner: a slot must never free a lane that
                # another slot of this process has just leased.
                owner = f"{self.owner}/{name}/{slot}"
                wakeup = asyncio.Event()
                self._wakeups[name].append(wakeup)
                task = asyncio.create_task(self._slot(name, owner, wakeup), name=f"deliver:{owner}")
                self._tasks.append(task)
            poller = asyncio.create_task(self._poll(name), name=f"deliver:{self.owner}/{name}")
            self._tasks.append(poller)

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = list(self._tasks), []
        try:
            await stop_tasks(tasks)
        finally:
            for events in (*self._wakeups.values(), *self._armed.values()):
                events.clear()

    async def _slot(self, destination: str, owner: str, wakeup: asyncio.Event) -> None:
        """Claim and deliver while there is work; then wait to be woken (by new work, by
        the poller when something falls due, or by a slot that filled its batch).

        A slot starts asleep: claiming at once from every slot of every destination would
        be `concurrency` store calls per destination before the first webhook (8,000 with
        1,000 channels); the poller's first look wakes one where work is due.
        """
        armed = self._armed[destination]
        poke = self._pokes[destination]
        limit = max(1, self.providers[destination].capabilities.max_batch)
        armed.append(wakeup)
        await wakeup.wait()
        while self._running:
            wakeup.clear()
            # Armed before the claim: a wake from here on is either seen by this claim or
            # sets the event that the wait below returns on at once.
            if wakeup not in armed:
                armed.append(wakeup)
            try:
                jobs = await self.store.claim(
                    destination, owner, limit, self.lease_seconds, self.clock()
                )
                if jobs:
                    if wakeup in armed:
                        armed.remove(wakeup)
                    if len(jobs) == limit:
                        # A full batch: more may be due, so rouse another slot to claim
                        # in parallel (one wake per webhook would otherwise leave one).
                        self.wake(destination)
                    heard = self._unheard[destination]
                    await self.process(destination, jobs, owner)
                    if (
                        len(jobs) < limit
                        and not wakeup.is_set()
                        and (self._unheard[destination] == heard)
                    ):
                        # The claim took everything due, and no wake went unheard while
                        # the batch was out: nothing to claim now (a retry or a released
                        # lane told the poller or a slot in `_record`). Saves a claim and
                        # a look at the next due time per batch.
                        armed.append(wakeup)
                        await wakeup.wait()
                    continue
                # Nothing due for this slot: the poller learns the next due time (a retry
                # just recorded, a lease running out) and wakes a slot then.
                poke.set()
                await wakeup.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store hiccup must not kill the slot; the leases expire and the jobs return.
                log.exception("delivery slot for %s failed; retrying", destination)
                await self._sleep(wakeup, self.poll_interval)

    async def _poll(self, destination: str) -> None:
        """Wake a slot of `destination` when its earliest lane falls due.

        One per destination rather than a timer per slot: idle slots cost nothing, where
        each used to ask the store every `poll_interval` (1,000 channels x 8 slots kept an
        idle gateway at half a core). Asked again when a slot finds nothing to claim (the
        due time may have moved) and at least every `poll_interval`, which also covers
        leases of a crashed process running out and work added by others.
        """
        poke = self._pokes[destination]
        while self._running:
            poke.clear()
            timeout = self.poll_interval
            try:
                now = self.clock()
                due = await self.store.next_due(destination, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the next due time of %s failed", destination)
                due = None
            if due is not None:
                if due <= now:
                    self.wake(destination)
                    # The claim that follows takes what is due; don't ask again until a
                    # slot reports back (or the interval passes).
                else:
                    timeout = min(timeout, due - now)
            await self._sleep(poke, timeout)
            # A burst of empty claims pokes many times: one look per loop turn is enough.
            await asyncio.sleep(0)

    @staticmethod
    async def _sleep(wakeup: asyncio.Event, seconds: float) -> None:
        await wait_event(wakeup, seconds)

    async def process(self, destination: str, jobs: Sequence[Job], owner: str) -> None:
        """Deliver one claimed batch and record every outcome; frees the lanes at the end,
        also when it fails.

        `claim` marked every job as attempted. A failure leaves that mark on every job that
        was handed to a provider call (it may have been sent, so the next claim treats it as
        ambiguous) or whose outcome was decided but not recorded; the mark comes off the live
        jobs that never got that far (cut, blocked, not reached), as it would have been
        absent before claims marked jobs.
        """
        results = Results()
        try:
            await self._process(destination, jobs, owner, results)
        except Exception:
            # Free the lanes now rather than at lease expiry.
            lanes = sorted({job.lane for job in jobs})
            unsent = sorted(results.unsent - results.decided())
            await self.store.release(owner, lanes, self.clock(), unsent=unsent)
            raise

    async def _process(
        self, destination: str, jobs: Sequence[Job], owner: str, results: Results
    ) -> None:
        provider = self.providers[destination]
        capabilities = provider.capabilities
        routes = self.routes()
        live: list[tuple[Job, Route]] = []
        suspects: list[tuple[Job, Route]] = []
        for job in jobs:
            route = routes.get(job.route)
            if route is None:
                route_gone(job, capabilities.idempotent_sends, results)
            elif (
                job.kind == "send"
                and job.sending_since is not None
                and not capabilities.idempotent_sends
            ):
                if capabilities.finds_sent:
                    # Ask the destination first; sent again below only if it did not land.
                    suspects.append((job, route))
                    live.append((job, route))
                else:
                    results.dead.append((job, AMBIGUOUS_REASON.format(destination=destination)))
                    unknown = AmbiguousError("delivery outcome unknown")
                    self.judge.failure_ack(job, route, unknown, results)
            elif (wait := reorder_wait(job, self.reorder_window, self.clock())) is not None:
                # Young enough that an older message may still be on its way: it waits.
                results.retries.append((job, wait, "waiting for older messages"))
            else:
                live.append((job, route))
        results.unsent.update(job.id for job, _ in live)
        blocked = Held(jobs)
        landed: dict[str, set[str]] = {}
        if suspects:
            landed = await self._reconcile(provider, suspects, results, blocked)
            decided = results.decided()
            live = [(j, r) for j, r in live if j.id not in decided and blocked.free(j)]
        live, cut = defer_references(live, landed)
        if cut:
            # Unmarked before the sends, not after: were the process to die during the call,
            # a cut job left marked would be parked as ambiguous though never sent. Cuts are
            # rare, and this costs no more than the separate mark before every send did.
            unmark = [job.id for job, _ in cut]
            await self.store.release(owner, [], self.clock(), unsent=unmark)
            results.unsent.difference_update(unmark)
        # Most batches finish long before a lease runs low: a timer, not a task, until then.
        keepers: list[asyncio.Task[None]] = []
        lanes = sorted({job.lane for job in jobs})
        timer = asyncio.get_running_loop().call_later(
            self.lease_seconds / 3,
            lambda: keepers.append(asyncio.create_task(self._keep_leases(owner, lanes))),
        )
        try:
            for kind in ("send", "ack", "status"):
                batch = [(j, r) for j, r in live if j.kind == kind and blocked.free(j)]
                if batch:
                    await self._deliver_kind(provider, kind, batch, results)
                    for job in [j for j, _, _ in results.retries] + [j for j, *_ in results.holds]:
                        blocked.add(job)
        finally:
            timer.cancel()
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
        await self._record(destination, jobs, results, owner)

    async def _reconcile(
        self,
        provider: Provider,
        suspects: list[tuple[Job, Route]],
        results: Results,
        blocked: Held,
    ) -> dict[str, set[str]]:
        """Ask the destination whether sends an earlier attempt may have made landed.

        Landed: finished like a send, with its id map row and ack. Not landed: left to be
        sent again in this batch. Unknown for now, or too early to ask: retried later,
        still marked as possibly sent, with its lane held (added to `blocked`). Cannot be
        asked: parked with the reason, as for a destination that cannot be asked at all.
        Returns, per lane, the source ids of the messages found landed.
        """
        now = self.clock()
        settle = provider.capabilities.settle_seconds
        asking: list[tuple[Job, Route, Outgoing]] = []
        for job, route in suspects:
            since = job.sending_since
            assert since is not None
            if now < since + settle:
                # A request begun then may still be running at the destination.
                results.holds.append(
                    (job, since + settle, "waiting to ask whether it landed", since)
                )
                blocked.add(job)
                continue
            try:
                item = await self.items.prepare("send", job, route)
            except DeliveryError as exc:
                if not isinstance(exc, TemporaryError):
                    self.judge.apply(job, route, exc, results)
                else:
                    at = now + self.retry_policy.delay(job.attempts + 1, exc.retry_after)
                    results.holds.append((job, at, str(exc), since))
                    blocked.add(job)
                continue
            assert isinstance(item, Outgoing)
            asking.append((job, route, item))
        if not asking:
            return {}
        answers = await shaping.ask_whether_sent(provider, [item for _, _, item in asking])
        landed: dict[str, set[str]] = {}
        for (job, route, item), answer in zip(asking, answers, strict=True):
            since = job.sending_since
            assert since is not None
            if isinstance(answer, Sent | NotLanded):
                found = isinstance(answer, Sent)
                self.notify(
                    Observation(
                        "reconciled",
                        job.destination,
                        job.route,
                        _message_id(job),
                        job.id,
                        {"kind": job.kind, "landed": found},
                    )
                )
                if isinstance(answer, Sent):
                    results.finished.append(self.judge.finished(job, route, answer, item))
                    if isinstance(item.event, Message):
                        landed.setdefault(job.lane, set()).add(item.event.native_id)
                continue
            attempts = job.attempts + 1
            if isinstance(answer, TemporaryError) and attempts < self.retry_policy.max_attempts:
                at = now + self.retry_policy.delay(attempts, answer.retry_after)
                results.holds.append((job, at, f"asking whether it landed: {answer}", since))
                blocked.add(job)
            else:
                reason = UNANSWERED_REASON.format(destination=job.destination, detail=answer)
                results.dead.append((job, reason))
                self.judge.failure_ack(job, route, AmbiguousError(str(answer)), results)
        return landed

    async def _keep_leases(self, owner: str, lanes: list[str]) -> None:
        """Renew the batch's leases while a slow call runs, so no one else takes its lanes.

        A provider call may outlast a lease (a portal downloading files, a rate-limit wait);
        were the lease to expire meanwhile, another worker could send the same messages.
        """
        while True:
            try:
                await self.store.renew(owner, lanes, self.clock() + self.lease_seconds)
            except Exception:
                log.exception("renewing the leases of %s failed", owner)
            await asyncio.sleep(self.lease_seconds / 3)

    async def _deliver_kind(
        self,
        provider: Provider,
        kind: str,
        batch: list[tuple[Job, Route]],
        results: Results,
    ) -> None:
        prepared: list[tuple[Job, Route, object]] = []
        for job, route in batch:
            try:
                item = await self.items.prepare(kind, job, route)
            except DeliveryError as exc:
                self.judge.apply(job, route, exc, results)
                continue
            if item is None:
                results.finished.append(Finished(job.id))
            else:
                prepared.append((job, route, item))
        if not prepared:
            return
        items = [item for _, _, item in prepared]
        # From here on the provider may act on them: their mark stays, whatever happens.
        results.unsent.difference_update(job.id for job, _, _ in prepared)
        started = self.clock()
        try:
            if kind == "send":
                # Shaped to the destination's capabilities first (gateway/shaping.py).
                outcomes = await shaping.send(provider, items, self.providers)  # type: ignore[arg-type]
            elif kind == "ack":
                outcomes = await provider.acknowledge(items)  # type: ignore[arg-type]
            else:
                outcomes = await shaping.apply_status(provider, items)  # type: ignore[arg-type]
            if len(outcomes) != len(items):
                raise TemporaryError(
                    f"provider returned {len(outcomes)} outcomes for {len(items)} items"
                )
        except DeliveryError as exc:
            outcomes = [exc] * len(items)
        except Exception as exc:
            log.exception("%s.%s raised", provider.instance, kind)
            outcomes = [TemporaryError(f"{type(exc).__name__}: {exc}")] * len(items)
        for (job, route, item), outcome in zip(prepared, outcomes, strict=True):
            self.judge.apply(job, route, outcome, results, item, started)

    async def _record(
        self, destination: str, jobs: Sequence[Job], results: Results, owner: str
    ) -> None:
        now = self.clock()
        # Dead letters and retries first: `finish` frees the lanes, and a lane must not be
        # handed to another slot while one of its jobs is still at its head undecided.
        for job, reason in results.dead:
            await self.store.dead_letter(job.id, owner, reason, now)
            self.notify(
                Observation(
                    "dead_lettered",
                    destination,
                    job.route,
                    None,
                    job.id,
                    {"reason": reason, "kind": job.kind},
                )
            )
        await hold_jobs(self.store, results.unrouted, owner, now, self.notify)
        for job, at, error in results.retries:
            await self.store.retry(job.id, owner, at, error, now)
            self.notify(
                Observation(
                    "retried",
                    destination,
                    job.route,
                    None,
                    job.id,
                    {"error": error, "kind": job.kind, "retry_in": at - now},
                )
            )
        for job, at, error, since in results.holds:
            await self.store.retry(job.id, owner, at, error, now, possibly_sent_since=since)
            self.notify(
                Observation(
                    "retried",
                    destination,
                    job.route,
                    None,
                    job.id,
                    {"error": error, "kind": job.kind, "retry_in": at - now},
                )
            )
        if results.retries or results.holds:
            self._pokes[destination].set()  # the poller learns the new due times
        if results.followups:
            await self.store.enqueue(results.followups, now)
        freed_work = await self.store.finish(results.finished, owner, now)
        # A lease ends by itself once every job it handed out is finished, retried or
        # dead-lettered; only lanes with jobs left untouched (cut, blocked) need a release.
        # The cut jobs lost their mark already; the blocked ones (acks and statuses behind a
        # retry in their lane, never handed to a provider) lose it here.
        decided = results.decided()
        untouched = sorted({job.lane for job in jobs if job.id not in decided})
        if untouched:
            blocked = sorted(results.unsent - decided)
            await self.store.release(owner, untouched, now, unsent=blocked)
            results.unsent.clear()
            self.wake(destination)  # the released lanes are due now
        elif freed_work or results.dead:
            # Work came into this batch's lanes while they were leased (a customer's next
            # message): the claims its wake caused could not take it, and without this
            # wake it would wait for the poller's next look, up to `poll_interval`.
            self.wake(destination)
        by_id = {job.id: job for job in jobs}
        for finished in results.finished:
            job = by_id[finished.job_id]
            self.notify(
                Observation(
                    "delivered",
                    destination,
                    job.route,
                    _message_id(job),
                    job.id,
                    {"kind": job.kind, "latency": now - job.created_at},
                )
            )
        for followup in results.followups:
            self.wake(followup.destination)
        for finished in results.finished:
            for followup in finished.followups:
                self.wake(followup.destination)


def _message_id(job: Job) -> str | None:
    event = job.payload.get("event", {}) if isinstance(job.payload, dict) else {}
    native = event.get("native_id")
    return str(native) if native is not None else None
