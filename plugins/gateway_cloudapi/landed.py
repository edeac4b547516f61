"""Whether Cloud API sends whose answer was lost landed (`CloudApiProvider.find_sent`).

Meta offers no way to read sent messages back. What it does give is an echo: a send may
carry `biz_opaque_callback_data` (up to 512 characters), and every status webhook of that
message (`sent`, `delivered`, `read`, `failed`) repeats it. So every send carries a tag
naming its job and part (`wcg:{job}:{part}`: no secret, no customer data), and:

* **Evidence.** A status that carries our tag for a wamid the gateway has not recorded is
  written to the instance's state, `landed:{job}:{part}` -> the wamid: one write. That is
  a send whose answer never came back (a crash, a read timeout), or one whose answer came
  but whose batch the core has yet to record: a `sent` status can outrun the end of its
  batch, and a crash before the record would leave the send unknown with its status
  already answered 2xx (the crash chaos run found two such, sent twice). So the first
  status of each message costs one id-map lookup (`Hub.was_sent_by_gateway`); once the id
  map or the evidence holds it, its later statuses (`delivered`, `read`) are known from
  memory.
* **Landed.** `find_sent` finds that evidence: `Sent` with the wamid, recorded as if the
  send had answered.
* **Not landed.** No status at all, `confirm_window` seconds after the attempt began (or
  after this process started, whichever is later: a status posted while the gateway was
  down is re-posted by Meta after it came back, on Meta's own schedule), and proof that
  the webhook endpoint worked, so that a status of ours would have come: `NotLanded`, sent
  again. Either proof will do:

  - a status reached this process for a send it made whose answer came after the
    suspect's attempt began: Meta took a later send of this number and its status got
    through, but none of ours. This is what settles a quiet number (the last replies
    before a crash, nothing after them): no webhook may come late in the window;
  - a Cloud API webhook for the number reached the gateway in the second half of the
    window, after a re-post of a status lost at the start would have come (a busy number,
    or the sends were made by another process of a pool). Reached this process, or another
    one: the process that takes webhooks notes the time in the instance's state (at most
    every `window / 8`), for one that takes none (the delivery process of `[workers]
    delivery_process`). The first proof stays within one process: with a delivery
    process, sends and their statuses are in different processes, and only the second holds.

  Not "any webhook after the window's start": a customer's message right after a restart
  says nothing of statuses, whereas a later send's status shows that statuses Meta posted
  after ours would have been posted got through.
* **Cannot tell.** Otherwise `TemporaryError`: asked again later (first after
  `settle_seconds`, then at growing intervals), and parked by the core after its
  `max_attempts` with the reason, since a missing status while no webhook arrives proves
  nothing. The residual risk is in docs/reliability.md.

Evidence is kept `KEEP_SECONDS` (Meta re-posts a webhook for up to 7 days), then pruned at
start; it is not deleted when used, since the core's record of the answer may still be lost
to a crash after `find_sent` returned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway import (
    DeliveryError,
    Hub,
    Landing,
    Message,
    NotLanded,
    Outgoing,
    ProviderState,
    Sent,
    TemporaryError,
)
from gateway_cloudapi.outbound import plan_parts

log = logging.getLogger("gateway_cloudapi")
JSON = Any

#: The state key prefix of evidence, and where `_send_parts` keeps a message's parts sent.
EVIDENCE = "landed:"
PROGRESS = "progress:"
#: How long evidence is kept: Meta stops re-posting a webhook after 7 days.
KEEP_SECONDS = 8 * 86400.0
#: The first question comes this long after the attempt began (at most `confirm_window`):
#: Meta posts the `sent` status within seconds of accepting a message.
SETTLE_SECONDS = 10.0
#: Wamids of this process's own sends, remembered so their statuses cost no lookup.
RECENT = 10_000
#: The state key of when a webhook was last heard, for processes that take none.
HEARD = "heard"
_TAG = re.compile(r"wcg:(\d+):(\d+)\Z")


def tag(job_id: int, part: int) -> str:
    """The `biz_opaque_callback_data` of part `part` of job `job_id`."""
    return f"wcg:{job_id}:{part}"


def tagged(payload: dict[str, JSON], label: str) -> dict[str, JSON]:
    """`payload` carrying `label` as its `biz_opaque_callback_data`."""
    return {**payload, "biz_opaque_callback_data": label}


class Landings:
    """Collects the tagged statuses nobody was waiting for, and answers `find_sent`."""

    def __init__(
        self,
        state: ProviderState,
        hub: Hub,
        instance: str,
        *,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.hub = hub
        self.instance = instance
        self.window = window
        self.clock = clock
        #: When this process began receiving (`start`), and last received a webhook.
        self.up_since = clock()
        self.heard_at: float | None = None
        self._noted_at: float | None = None
        #: The latest answer time of a send of this process whose status then came back.
        self.confirmed: float | None = None
        #: wamid -> (when this process got it as a send's answer, or None for another's
        #: send; whether the id map or the evidence holds it, so its statuses cost nothing).
        self._recent: dict[str, tuple[float | None, bool]] = {}

    @property
    def settle(self) -> float:
        return min(SETTLE_SECONDS, self.window)

    async def start(self) -> None:
        self.up_since = self.clock()
        cutoff = self.clock() - KEEP_SECONDS
        for key, value in await self.state.items(EVIDENCE):
            at = value.get("at") if isinstance(value, dict) else None
            if not isinstance(at, int | float) or at < cutoff:
                await self.state.delete(key)

    # the send and webhook paths ----------------------------------------------------------
    def sent(self, wamid: str) -> None:
        """This process got `wamid` as a send's answer (not yet recorded by the core)."""
        _, durable = self._recent.get(wamid, (None, False))
        self._remember(wamid, self.clock(), durable)

    def _remember(self, wamid: str, answered: float | None, durable: bool) -> None:
        self._recent[wamid] = (answered, durable)
        if len(self._recent) > RECENT:
            del self._recent[next(iter(self._recent))]

    async def heard(self) -> None:
        """A signed webhook about this number arrived: the endpoint works now."""
        now = self.heard_at = self.clock()
        if self.window > 0 and (self._noted_at is None or now - self._noted_at >= self.window / 8):
            self._noted_at = now
            await self.state.put(HEARD, now)

    async def saw_status(self, wamid: str, label: str, recipient: str | None) -> None:
        """A status carrying `label`: evidence, unless the id map already holds its send."""
        found = _TAG.match(label)
        if found is None:
            return
        answered, durable = self._recent.get(wamid, (None, False))
        if answered is not None and (self.confirmed is None or answered > self.confirmed):
            self.confirmed = answered
        if durable:
            return
        if await self.hub.was_sent_by_gateway(self.instance, wamid):
            self._remember(wamid, answered, True)
            return
        key = f"{EVIDENCE}{int(found[1])}:{int(found[2])}"
        stored = await self.state.get(key)
        if not (isinstance(stored, dict) and stored.get("id") == wamid):
            await self.state.put(key, {"id": wamid, "to": recipient, "at": self.clock()})
            # Often only a status outrunning its send's record: `find_sent` tells the rest.
            log.debug("%s: a status names %s, not recorded yet: written down", self.instance, key)
        self._remember(wamid, answered, True)

    # find_sent ---------------------------------------------------------------------------
    async def find(self, batch: Sequence[Outgoing]) -> list[Landing]:
        answers: list[Landing] = []
        for item in batch:
            try:
                answers.append(await self._find_one(item))
            except DeliveryError as exc:
                answers.append(exc)
        return answers

    async def _find_one(self, item: Outgoing) -> Landing:
        event = item.event
        if not isinstance(event, Message):
            return NotLanded("the Cloud API is never sent edits or deletes")
        named = event.extra.get("template")
        count = 1 if isinstance(named, dict) and named.get("name") else len(plan_parts(event))
        if count == 0:
            return NotLanded("nothing WhatsApp can carry: it was never sent")
        done: list[str] = []
        progress = f"{PROGRESS}{item.job_id}"
        if count > 1:
            stored = await self.state.get(progress)
            done = [str(x) for x in stored] if isinstance(stored, list) else []
        evidence = await self.state.get(f"{EVIDENCE}{item.job_id}:{len(done)}")
        if isinstance(evidence, dict) and isinstance(evidence.get("id"), str):
            ids = [*done, evidence["id"]]
            if len(ids) < count:
                # This part went out: the resend continues with the next one.
                await self.state.put(progress, ids)
                return NotLanded(f"{len(ids)} of {count} parts landed")
            if count > 1:
                await self.state.delete(progress)
            extra: dict[str, JSON] = {"wa_id": evidence.get("to") or event.conversation_id}
            if len(ids) > 1:
                extra["parts"] = ids
            return Sent(native_id=ids[0], extra=extra)
        noted = await self.state.get(HEARD)
        elsewhere = float(noted) if isinstance(noted, int | float) else None
        heard = max((t for t in (self.heard_at, elsewhere) if t is not None), default=None)
        return self._verdict(item.sending_since, heard)

    def _verdict(self, since: float | None, heard_at: float | None) -> Landing:
        """No status names the send: not landed only once one would surely have come."""
        now = self.clock()
        began = since if since is not None else now
        base = max(began, self.up_since)
        due = base + self.window
        if now < due:
            wait = min(due - now, max(self.settle, now - began))
            return TemporaryError(
                f"no status from WhatsApp for it yet; sent again if none by "
                f"{self.window:g} s after it was sent",
                code="awaiting_status",
                retry_after=wait,
            )
        later_confirmed = self.confirmed is not None and self.confirmed > began
        heard_late = heard_at is not None and heard_at >= base + self.window / 2
        if not (later_confirmed or heard_late):
            return TemporaryError(
                "no status from WhatsApp for it, but no Cloud API webhook reached the "
                "gateway lately, nor a status of a later send, so that proves nothing: "
                "check the webhook setup",
                code="no_webhooks",
                retry_after=max(self.settle, self.window / 4),
            )
        proof = "a later send's status came" if later_confirmed else "its webhooks kept arriving"
        return NotLanded(f"no status from WhatsApp for it within {self.window:g} s, while {proof}")
