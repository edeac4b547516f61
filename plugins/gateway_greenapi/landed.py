"""Whether sends whose outcome is unknown reached GREEN-API (`GreenApiProvider.find_sent`).

GREEN takes no id of ours, so a message is recognised by what it was. Two places show what
the instance took: its send queue (`showMessagesQueue`: accepted, not sent yet, kept 24 h
until the instance is authorized) and its outgoing journal (`lastOutgoingMessages`: sent,
with `sendByApi`, `chatId`, `typeMessage`, the text or the file's name and caption, and
`timestamp`). A part of a message landed when one of them holds a message sent through the
API to its chat, with its text (a file: its name and caption), from the attempt's start on
(`Outgoing.sending_since`, less `CLOCK_SKEW`), whose id the gateway has not recorded for
another message (`Hub.was_sent_by_gateway`). Each found message answers one item only,
oldest first, so two identical texts in flight are told apart by count. Two requests
answer a whole batch. `getMessage` needs the id we lack; `getChatHistory` reads one chat.

GREEN says a sent message may take up to 2 minutes to show in the journal: the provider's
`settle_seconds` (150) waits that long after an attempt began before asking. A message that
sat in the queue (the instance not authorized) and left it less than 2 minutes before the
question is in neither place: a resend then doubles it (see docs/reliability.md).

What cannot be recognised is left to a person (`PermanentError`): a location, a contact.
A message in several parts (`send:{job}` keeps the parts sent) is asked about its first
unsent part: found, it joins the progress, and the resend sends only the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import (
    JSON,
    Claims,
    Hub,
    Landing,
    Match,
    Message,
    NotLanded,
    Outgoing,
    PermanentError,
    Planned,
    ProviderState,
    Sent,
    TemporaryError,
    find_in_lists,
)
from gateway_greenapi import outbound
from gateway_greenapi.chats import chat_id_for
from gateway_greenapi.client import GreenClient

#: How far the instance's clock may lag ours when `timestamp` is compared with an attempt.
CLOCK_SKEW = 30.0
#: The journal's default and longest useful window (the queue keeps messages 24 h).
MAX_MINUTES = 1440
#: Where `GreenApiProvider` keeps the parts of a message sent so far (`send:{job}`).
PROGRESS = "send:"
_TEXT_TYPES = ("textMessage", "extendedTextMessage", "quotedMessage")


@dataclass(frozen=True, slots=True)
class Sought:
    """What one part looks like in the queue and the journal."""

    chat_id: str
    method: str
    text: str
    file_name: str | None
    since: float


class Landings:
    """Finds sends in the instance's queue and outgoing journal."""

    def __init__(
        self,
        client: GreenClient,
        state: ProviderState,
        hub: Hub,
        instance: str,
        *,
        groups: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.state = state
        self.hub = hub
        self.instance = instance
        self.groups = groups
        self.clock = clock

    async def find(self, batch: Sequence[Outgoing]) -> list[Landing]:
        claims = Claims(self.hub, self.instance)
        return await find_in_lists(
            batch, claims, plan=self._plan, look_up=self._look_up, answer=self._answer
        )

    async def _plan(self, item: Outgoing) -> Planned[Sought]:
        event = item.event
        if not isinstance(event, Message):
            raise PermanentError(f"a {event.kind} is not looked for", code="NOT_RECOGNISABLE")
        chat_id = chat_id_for(event.conversation_id, groups=self.groups)
        parts = outbound.plan(event, item.quoted_target_id)
        done: list[str] = []
        if len(parts) > 1:
            saved = await self.state.get(f"{PROGRESS}{item.job_id}")
            if isinstance(saved, dict) and isinstance(saved.get("ids"), list):
                done = [str(i) for i in saved["ids"]][: len(parts)]
            if len(done) == len(parts):
                return Planned(len(parts), None, done)
        part = parts[len(done)]
        since = (item.sending_since or self.clock() - MAX_MINUTES * 60) - CLOCK_SKEW
        payload = part.payload
        if part.method == "sendMessage":
            text = payload["message"]
            return Planned(len(parts), Sought(chat_id, part.method, text, None, since), done)
        if part.method == "sendFileByUrl":
            caption = str(payload.get("caption") or "")
            name = str(payload["fileName"])
            return Planned(len(parts), Sought(chat_id, part.method, caption, name, since), done)
        raise PermanentError(
            f"a {part.method} cannot be recognised in GREEN-API's journal",
            code="NOT_RECOGNISABLE",
        )

    async def _look_up(self, sought: list[Sought]) -> Match[Sought]:
        queued = _dicts(await self.client.call("GET", "showMessagesQueue"))
        journal = await self._journal(min(s.since for s in sought))

        async def match(wanted: Sought, claims: Claims) -> str | None:
            return await self._match(wanted, queued, journal, claims)

        return match

    async def _journal(self, since: float) -> list[dict[str, Any]]:
        minutes = min(MAX_MINUTES, max(1, math.ceil((self.clock() - since) / 60) + 1))
        found = _dicts(
            await self.client.call("GET", "lastOutgoingMessages", params={"minutes": str(minutes)})
        )
        return sorted(found, key=lambda e: _number(e.get("timestamp")))

    async def _match(
        self,
        wanted: Sought,
        queued: list[dict[str, Any]],
        journal: list[dict[str, Any]],
        claims: Claims,
    ) -> str | None:
        for entry in queued:
            body = entry.get("body")
            if not isinstance(body, dict) or body.get("chatId") != wanted.chat_id:
                continue
            if str(entry.get("type")) != wanted.method or not _same(wanted, body, queue=True):
                continue
            if found := await claims.take(entry.get("messageID")):
                return found
        for entry in journal:
            if entry.get("chatId") != wanted.chat_id or entry.get("sendByApi") is False:
                continue
            if _number(entry.get("timestamp")) < wanted.since:
                continue
            if not _same(wanted, entry, queue=False):
                continue
            if found := await claims.take(entry.get("idMessage")):
                return found
        return None

    async def _answer(
        self, item: Outgoing, count: int, done: list[str], found: str | None
    ) -> Landing:
        if found is None:
            return NotLanded("not in GREEN-API's send queue nor in its outgoing journal")
        chat_id = chat_id_for(item.event.conversation_id, groups=self.groups)
        ids = [*done, found]
        key = f"{PROGRESS}{item.job_id}"
        if count == 1:
            return Sent(native_id=found, extra={"chatId": chat_id})
        if len(ids) < count:
            # This part went out: the resend continues with the next one.
            await self.state.put(key, {"ids": list(ids), "at": self.clock()})
            return NotLanded(f"{len(ids)} of {count} parts landed")
        await self.state.delete(key)
        extra: dict[str, JSON] = {"chatId": chat_id, "idMessages": list(ids)}
        return Sent(native_id=ids[-1], extra=extra)


def _same(wanted: Sought, entry: dict[str, Any], *, queue: bool) -> bool:
    """Whether a queue body or a journal entry has the sought part's content."""
    if wanted.method == "sendMessage":
        if queue:
            return str(entry.get("message")) == wanted.text
        if entry.get("typeMessage") not in _TEXT_TYPES:
            return False
        extended = entry.get("extendedTextMessage")
        text = entry.get("textMessage")
        if text is None and isinstance(extended, dict):
            text = extended.get("text")
        return str(text) == wanted.text
    if queue:
        return (
            entry.get("fileName") in (None, wanted.file_name)
            and str(entry.get("caption") or "") == wanted.text
        )
    return entry.get("fileName") == wanted.file_name and str(entry.get("caption") or "") == (
        wanted.text
    )


def _dicts(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise TemporaryError("GREEN-API answered a journal call without a list")
    return [entry for entry in data if isinstance(entry, dict)]


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
