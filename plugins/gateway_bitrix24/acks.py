"""Operator messages' fate, shown in the open line.

* The channel accepted the reply: `imconnector.send.status.delivery` with the event's `im`
  block and the channel's message id as an array. Bitrix24 then drops the "sending" spinner,
  shows the message delivered and read, and stores the id (`CONNECTOR_MID`), without which
  it would not report later edits or deletes of that message.
* WhatsApp reports it read: `imconnector.send.status.reading` (Bitrix24 accepts it; current
  portals show nothing more than the delivered state).
* The reply could not be delivered (window closed, no WhatsApp account, banned...), or
  WhatsApp reported it failed: the connector API has no failed status, so the operator is
  told with a message in the chat, posted on the customer's side of the line (Bitrix24 never
  echoes those back to the connector, so the note cannot reach the customer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import (
    Ack,
    DeliveryError,
    DeliveryStatus,
    Edit,
    Message,
    Outcome,
    PermanentError,
    StatusNotice,
)

from .formatting import quote_bbcode
from .forms import as_dict, as_int, as_items, as_str
from .outbound import SEND
from .reasons import explain
from .records import PortalStore
from .rest import RestClient
from .texts import CATALOGUE, N_, PortalLanguages

DELIVERY = "imconnector.send.status.delivery"
READING = "imconnector.send.status.reading"
NOT_DELIVERED = N_("notice.not_delivered")
#: Its title in every language, to recognise the gateway's own notes.
NOTE_TITLES = tuple(
    CATALOGUE.translator(language).gettext(NOT_DELIVERED) for language in CATALOGUE.languages
)


def is_own_note(text: str) -> bool:
    """Whether a text is (the start of) a notice the gateway posted."""
    bare = text.replace("[b]", "").replace("[/b]", "").lstrip("*")
    return bare.startswith(NOTE_TITLES)


@dataclass(slots=True)
class _Command:
    method: str
    line: int
    items: list[dict[str, Any]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an operator message came from: the `b24` block of `Message.extra`."""

    member_id: str
    line: int
    chat_id: str
    im: dict[str, int]

    @classmethod
    def of(cls, extra: Mapping[str, Any]) -> Origin | None:
        info = as_dict(extra.get("b24"))
        im = as_dict(info.get("im"))
        member_id, line = as_str(info.get("member_id")), as_int(info.get("line"))
        chat_id, message_id = as_str(info.get("chat_id")), as_int(im.get("message_id"))
        if not member_id or line is None or not chat_id or message_id is None:
            return None
        block = {"chat_id": as_int(im.get("chat_id")) or 0, "message_id": message_id}
        return cls(member_id, line, chat_id, block)


class Acknowledger:
    def __init__(
        self,
        rest: RestClient,
        store: PortalStore,
        connector_id: str,
        clock: Callable[[], float] = time.time,
        languages: PortalLanguages | None = None,
    ) -> None:
        self.rest = rest
        self.store = store
        self.languages = languages or PortalLanguages(rest, store)
        self.connector_id = connector_id
        self.clock = clock

    async def acknowledge(self, acks: Sequence[Ack]) -> list[Outcome]:
        plan: dict[str, dict[tuple[str, int], _Command]] = {}
        outcomes: list[Outcome] = [None] * len(acks)
        for index, ack in enumerate(acks):
            origin = Origin.of(ack.message.extra)
            if origin is None:
                continue  # not an operator message of this plugin: nothing to show
            if ack.error is not None:
                what = "edit" if isinstance(ack.message, Edit) else "message"
                text = getattr(ack.message, "text", "") or ""
                note = await self._note(origin, ack.error.code, ack.error.text, text, what)
                _add(plan, origin, SEND, note, index)
            elif isinstance(ack.message, Message):
                delivered = ack.delivered_id or ack.message.native_id
                item = {
                    "im": origin.im,
                    "message": {"id": [delivered], "date": int(self.clock())},
                    "chat": {"id": origin.chat_id},
                }
                _add(plan, origin, DELIVERY, item, index)
        await self._run(plan, outcomes)
        return outcomes

    async def apply_status(self, notices: Sequence[StatusNotice]) -> list[Outcome]:
        plan: dict[str, dict[tuple[str, int], _Command]] = {}
        outcomes: list[Outcome] = [None] * len(notices)
        for index, notice in enumerate(notices):
            origin = Origin.of(notice.message_extra)
            if origin is None:
                continue
            update = notice.update
            if update.status is DeliveryStatus.READ:
                # The same shape as `delivery`: the channel's (WhatsApp) id of the message.
                read_id = notice.destination_id or update.native_id
                item = {
                    "im": origin.im,
                    "message": {"id": [read_id]},
                    "chat": {"id": origin.chat_id},
                }
                _add(plan, origin, READING, item, index)
            elif update.status is DeliveryStatus.FAILED:
                note = await self._note(origin, update.error_code, update.error_text, "", "message")
                _add(plan, origin, SEND, note, index)
        await self._run(plan, outcomes)
        return outcomes

    async def _note(
        self, origin: Origin, code: str | None, reason: str | None, original: str, what: str
    ) -> dict[str, Any]:
        t = await self.languages.translator(origin.member_id)
        reason = explain(t, code, reason)
        text = f"[b]{t.gettext(NOT_DELIVERED)}[/b]: {reason[:400]}"
        if original:
            text += "\n" + quote_bbcode(original, limit=200)
        user = await self.store.user_block_of(origin.member_id, origin.line, origin.chat_id)
        note_id = f"gw-failed-{origin.im['message_id']}-{what}-{int(self.clock() * 1000)}"
        return {
            "user": user,
            "message": {"id": note_id, "date": int(self.clock()), "text": text},
            "chat": {"id": origin.chat_id},
        }

    async def _run(
        self, plan: dict[str, dict[tuple[str, int], _Command]], outcomes: list[Outcome]
    ) -> None:
        await asyncio.gather(
            *(self._portal(member, list(cmds.values()), outcomes) for member, cmds in plan.items())
        )

    async def _portal(
        self, member_id: str, commands: list[_Command], outcomes: list[Outcome]
    ) -> None:
        for start in range(0, len(commands), 50):
            chunk = commands[start : start + 50]
            try:
                results = await self._execute(member_id, chunk)
            except DeliveryError as exc:
                for command in chunk:
                    for index in command.indices:
                        outcomes[index] = exc
                continue
            for command, result in zip(chunk, results, strict=True):
                error = result if isinstance(result, DeliveryError) else _item_error(result)
                if error is not None:
                    for index in command.indices:
                        outcomes[index] = error

    async def _execute(self, member_id: str, commands: list[_Command]) -> list[Any]:
        def params(command: _Command) -> dict[str, Any]:
            return {"CONNECTOR": self.connector_id, "LINE": command.line, "MESSAGES": command.items}

        if len(commands) == 1:
            reply = await self.rest.call(member_id, commands[0].method, params(commands[0]))
            return [reply.result]
        keyed = {f"a{i}": (c.method, params(c)) for i, c in enumerate(commands)}
        batch = await self.rest.batch(member_id, keyed)
        return [batch.errors.get(key, batch.results.get(key)) for key in keyed]


def _add(
    plan: dict[str, dict[tuple[str, int], _Command]],
    origin: Origin,
    method: str,
    item: dict[str, Any],
    index: int,
) -> None:
    commands = plan.setdefault(origin.member_id, {})
    command = commands.setdefault((method, origin.line), _Command(method, origin.line))
    command.items.append(item)
    command.indices.append(index)


def _item_error(result: Any) -> DeliveryError | None:
    body = as_dict(result)
    if body.get("SUCCESS") in (True, "Y", "1", 1) or result is True:
        return None
    if not body:
        return None
    errors = [str(e) for e in as_items(body.get("ERRORS"))]
    rows = as_items(as_dict(body.get("DATA")).get("RESULT"))
    for row in rows:
        errors += [str(e) for e in as_items(as_dict(row).get("ERRORS"))]
    if not errors:
        return None
    return PermanentError(", ".join(errors), code=errors[0])
