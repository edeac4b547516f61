"""Jobs as provider items: the objects a destination's `send`, `acknowledge` and
`apply_status` take, with message ids translated through the id map; and the cut of a
batch before a send that refers to a message sent earlier in the same batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from gateway.errors import PermanentError, TemporaryError
from gateway.models import Delete, Edit, Message, Sender, StatusUpdate, event_from_json
from gateway.providers import Ack, Outgoing, Provider, Route, StatusNotice
from gateway.store.base import IdMapping, Job, Store

STATUS_LOOKUP_ATTEMPTS = 3


class Items:
    """Builds the provider-facing object of each job (reads the id map, never writes)."""

    def __init__(
        self, store: Store, providers: Mapping[str, Provider], clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.providers = providers
        self.clock = clock

    async def prepare(self, kind: str, job: Job, route: Route) -> object | None:
        """The provider-facing object for a job, with ids translated through the id map."""
        payload = job.payload
        event = event_from_json(payload["event"])
        if kind == "ack":
            error = payload.get("error")
            return Ack(
                job_id=job.id,
                route=route,
                message=event,  # type: ignore[arg-type]
                delivered_id=payload.get("delivered_id"),
                error=PermanentError(error["text"], code=error.get("code")) if error else None,
            )
        if kind == "status":
            assert isinstance(event, StatusUpdate)
            return await self.status_notice(job, route, event)
        assert isinstance(event, Message | Edit | Delete)
        return await self.outgoing(job, route, event)

    async def outgoing(self, job: Job, route: Route, event: Message | Edit | Delete) -> Outgoing:
        capabilities = self.providers[job.destination].capabilities
        target_id: str | None = None
        quoted_id: str | None = None
        if isinstance(event, Edit | Delete):
            target_id, _ = await self.translate(route, job.source, event.native_id)
            if target_id is None:
                raise PermanentError(
                    f"the message this {event.kind} refers to was never delivered, "
                    "so there is nothing to change at the destination",
                    code="unknown_message",
                )
            supported = capabilities.edits if isinstance(event, Edit) else capabilities.deletes
            if not supported:
                event = _as_note(event)
                quoted_id = target_id
                target_id = None
        elif event.quoted_native_id is not None:
            quoted_id, quoted_text = await self.translate(route, job.source, event.quoted_native_id)
            if event.quoted_text is None and quoted_text:
                # Lets the destination show what was quoted even when its source sent no text.
                event = dataclasses.replace(event, quoted_text=quoted_text)
        return Outgoing(
            job_id=job.id,
            route=route,
            source=job.source,
            event=event,
            target_native_id=target_id,
            quoted_target_id=quoted_id,
            attempt=job.attempts + 1,
            sending_since=job.sending_since,
        )

    async def translate(
        self, route: Route, source: str, native_id: str
    ) -> tuple[str | None, str | None]:
        """The other side's id of a message `source` knows as `native_id` (either way),
        and the start of its text."""
        forward = await self.store.lookup_by_source(route.name, source, native_id)
        if forward is not None:
            return forward.destination_id, _preview(forward)
        backward = await self.store.lookup_by_destination(source, native_id)
        if backward is not None and backward.route == route.name:
            return backward.source_id, _preview(backward)
        return None, None

    async def status_notice(
        self, job: Job, route: Route, event: StatusUpdate
    ) -> StatusNotice | None:
        mapping = await self.store.lookup_by_destination(job.source, event.native_id)
        if mapping is None:
            # The status may overtake the commit of the send that produced its id.
            if job.attempts < STATUS_LOOKUP_ATTEMPTS:
                raise TemporaryError("message not in the id map yet", retry_after=1.0)
            return None
        if mapping.route != route.name:
            return None
        rose = await self.store.merge_status(
            job.source, event.native_id, int(event.status), self.clock()
        )
        if not rose and job.attempts == 0:
            return None
        update = StatusUpdate(
            native_id=mapping.source_id,
            status=event.status,
            conversation_id=mapping.conversation_id or event.conversation_id,
            error_code=event.error_code,
            error_text=event.error_text,
            timestamp=event.timestamp,
        )
        source_extra = mapping.extra.get("source", {}) if isinstance(mapping.extra, dict) else {}
        return StatusNotice(
            job.id, route, update, message_extra=source_extra, destination_id=event.native_id
        )


def defer_references(
    live: list[tuple[Job, Route]], landed: Mapping[str, set[str]] | None = None
) -> tuple[list[tuple[Job, Route]], list[tuple[Job, Route]]]:
    """Cut each lane before a send that refers to a message sent earlier in this claim.

    Quotes, edits and deletes are translated through the id map, which gets the earlier
    message's row only when this batch is recorded. Returns the jobs kept and those cut;
    the caller takes the claim's mark off the cut jobs, and they are claimed again as soon
    as the lane is released. `landed` are messages found landed in this claim (their rows
    are written with the batch too).
    """
    kept: list[tuple[Job, Route]] = []
    dropped: list[tuple[Job, Route]] = []
    sent: dict[str, set[str]] = {lane: set(ids) for lane, ids in (landed or {}).items()}
    cut: set[str] = set()
    for job, route in live:
        if job.lane in cut:
            dropped.append((job, route))
            continue
        event = job.payload.get("event", {}) if isinstance(job.payload, dict) else {}
        if job.kind == "send" and isinstance(event, dict):
            is_message = event.get("kind") == "message"
            refers = event.get("quoted_native_id") if is_message else event.get("native_id")
            if refers is not None and refers in sent.get(job.lane, ()):
                cut.add(job.lane)
                dropped.append((job, route))
                continue
            if is_message:
                sent.setdefault(job.lane, set()).add(str(event.get("native_id")))
        kept.append((job, route))
    return kept, dropped


_NOTE_SENDER = Sender(id="gateway", name="Gateway")


def _preview(mapping: IdMapping) -> str | None:
    text = mapping.extra.get("text") if isinstance(mapping.extra, dict) else None
    return str(text) if text else None


def _as_note(event: Edit | Delete) -> Message:
    """An edit or delete for a destination that cannot apply it, as a visible note."""
    text = f"✏️ edited: {event.text}" if isinstance(event, Edit) else "🗑 message deleted"
    return Message(
        conversation_id=event.conversation_id,
        native_id=f"{event.native_id}#{event.kind}",
        sender=_NOTE_SENDER,
        text=text,
        quoted_native_id=event.native_id,
        is_note=True,
        extra=event.extra,
    )
