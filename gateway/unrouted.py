"""Messages no route carried when they arrived: held in the store, released in order.

Ingest holds an accepted message that no route carries (its number or open line is not
linked yet, or was unlinked) in the store's `held` table instead of forgetting it, and a
later message of the same conversation waits behind it there (the store decides that in
the ingest transaction, so no process can let it overtake). This module lets them go:

* `release()` runs whenever this process sees the routes or the held messages change (in
  any process: see `shared_state`). Under a lock every process shares, it plans each
  held group (instance and target) that now has a route, oldest first, and turns the
  messages into jobs in id order, so they are delivered in the order they arrived.
* `expire()` (housekeeping) makes messages held longer than `[store] hold_unrouted_days`
  dead letters with that reason; `replay_held` holds them again.

A message already queued when its route goes away (an unlink before it was delivered) is
held the same way: the delivery slot that finds its route gone hands the job to
`route_gone`, and `hold_jobs` moves its message back to `held` (`Store.hold_job`), lane by
lane in claim order. Released later, it is placed among its conversation's waiting
messages by its own timestamp, so it still goes out in the customer's order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from gateway.aio import stop_tasks
from gateway.models import InboundEvent, event_from_json
from gateway.observe import Observation
from gateway.outcomes import Results
from gateway.planning import conversation_of, routes_for
from gateway.providers import Route
from gateway.store.base import ROUTE_GONE, HeldMessage, IngestItem, Job, NewJob, Store

log = logging.getLogger("gateway")

PAGE = 500
LOCK = "held:release"

Planner = Callable[[str, InboundEvent], IngestItem]


class Unrouted:
    """Releases held messages when a route appears, and expires those held too long."""

    def __init__(
        self,
        store: Store,
        *,
        routes: Callable[[], Sequence[Route]],
        planner: Planner,
        notify: Callable[[Observation], None],
        wake: Callable[[str], None],
        clock: Callable[[], float],
        max_age: float,
    ) -> None:
        self.store = store
        self.routes = routes
        self.planner = planner
        self.notify = notify
        self.wake = wake
        self.clock = clock
        self.max_age = max_age
        self.released = 0
        self._again = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="unrouted")
        self.poke()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])

    def poke(self) -> None:
        """Routes or held messages changed: look for held messages a route now carries."""
        self._again.set()

    async def _run(self) -> None:
        while True:
            await self._again.wait()
            self._again.clear()
            try:
                await self.release()
            except Exception:
                log.exception("releasing held messages failed; trying again at the next change")

    async def release(self) -> int:
        """Turn every held message a route now carries into its jobs; returns how many."""
        count = 0
        async with self.store.lock(LOCK):
            for stats in await self.store.held_stats():
                if stats.held and self._carried(stats.instance, stats.target):
                    count += await self._release_group(stats.instance, stats.target)
        self.released += count
        return count

    def _carried(self, instance: str, target: str | None) -> bool:
        return bool(routes_for(instance, target, self.routes()))

    async def _release_group(self, instance: str, target: str | None) -> int:
        count = 0
        while True:
            held = await self.store.held(limit=PAGE, instance=instance, target=target)
            # `target` filters only when not None: skip other targets of the instance here.
            held = [m for m in held if m.target == target]
            if not held:
                return count
            released: list[tuple[int, Sequence[NewJob]]] = []
            for message in held:
                item = self.planner(instance, _inbound(message))
                if item.hold:
                    break  # the route went away meanwhile: the rest keeps waiting too
                released.append((message.id, item.jobs))
            if not released:
                return count
            count += await self.store.release_held(released, self.clock())
            for destination in {job.destination for _, jobs in released for job in jobs}:
                self.wake(destination)
            log.info(
                "released %d held messages of %s%s",
                len(released),
                instance,
                f" ({target})" if target else "",
                extra={"instance": instance},
            )
            if len(released) < len(held) or len(held) < PAGE:
                return count

    async def expire(self) -> list[HeldMessage]:
        """Dead-letter messages held longer than `max_age` seconds."""
        now = self.clock()
        days = self.max_age / 86400
        reason = f"no route carried it for {days:g} days (held since it arrived, then parked)"
        expired = await self.store.expire_held(now - self.max_age, reason, now)
        for message in expired:
            native = message.event.get("event", {}).get("native_id")
            self.notify(
                Observation(
                    "dead_lettered",
                    message.instance,
                    message_id=native if isinstance(native, str) else None,
                    detail={"kind": "unrouted", "held_id": message.id, "reason": reason},
                )
            )
        return expired


def _inbound(message: HeldMessage) -> InboundEvent:
    stored = message.event
    return InboundEvent(
        message.dedupe_key, event_from_json(stored["event"]), stored.get("target") or None
    )


def route_gone(job: Job, idempotent_sends: bool, results: Results) -> None:
    """A claimed job whose route no longer exists: hold the message it carries (into
    `results.unrouted`, for `hold_jobs`), or park it with the reason (`results.dead`).

    Only a send that was never possibly sent is held: an ack or a status belongs to the
    route that carried its message, and a send an earlier attempt may have made cannot be
    asked about without its route, so resending it could double it."""
    gone = f"route {job.route!r} no longer exists"
    payload = job.payload if isinstance(job.payload, dict) else {}
    event = payload.get("event")
    if job.kind != "send" or not isinstance(event, dict):
        results.dead.append((job, gone))
    elif job.sending_since is not None and not idempotent_sends:
        results.dead.append((job, f"{gone}, and an earlier attempt may have sent it"))
    else:
        target = payload.get("target")
        target = target if isinstance(target, str) else None
        message = IngestItem(
            instance=job.source,
            dedupe_key=f"job:{job.id}:{event.get('native_id')}",
            event={"event": event, "target": target},
            hold=True,
            conversation=conversation_of(event_from_json(event)),
            target=target,
        )
        results.unrouted.append((job, message))


async def hold_jobs(
    store: Store,
    held: Sequence[tuple[Job, IngestItem]],
    owner: str,
    now: float,
    notify: Callable[[Observation], None],
) -> None:
    """Move the messages of jobs whose route is gone back to `held`, in claim order."""
    for job, message in held:
        if not await store.hold_job(job.id, owner, message, now):
            continue
        native = message.event.get("event", {}).get("native_id")
        notify(
            Observation(
                "held",
                job.source,
                job.route,
                native if isinstance(native, str) else None,
                job.id,
                {"kind": job.kind, "why": f"{ROUTE_GONE}; kept until a route carries it"},
            )
        )
