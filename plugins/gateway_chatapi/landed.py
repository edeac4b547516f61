"""Whether sends whose outcome is unknown reached Chat API (`ChatApiChannel.find_sent`).

Chat API takes no id of ours, so a message is recognised by what it was. Two places show
what the instance took (spec 1.3): its send queue (`GET /showMessagesQueue`: accepted,
waiting for the phone) and its history (`GET /messages`: every message of the account with
`fromMe`, `chatId`, `type`, `body`, `caption` and `time`, numbered). A part of a message
landed when one of them holds a message of ours in its chat, of its kind, with its text
(a text's `body`, a file's `caption`), from the attempt's start on (`Outgoing.sending_since`,
less `CLOCK_SKEW`), whose id the gateway has not recorded for another message (the id map,
`Hub.was_sent_by_gateway`). Each found message answers one item only, oldest first, so two
identical texts in flight are told apart by count. Two requests answer a whole batch.

What cannot be recognised is left to a person (`PermanentError`): a file without a caption
(its `body` in the history is the file as Chat API keeps it), a location, a contact.
A message in several parts (`progress:{job}` lists the parts sent) is asked about its
first unsent part: found, it joins the progress, and the resend sends only the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import (
    Claims,
    Hub,
    Landing,
    Match,
    NotLanded,
    Outgoing,
    PermanentError,
    Planned,
    ProviderState,
    Sent,
    TemporaryError,
    find_in_lists,
)
from gateway_chatapi.client import ChatApiClient
from gateway_chatapi.outbound import plan_send

#: How far the instance's clock may lag ours when `time` is compared with an attempt's start.
CLOCK_SKEW = 30.0
#: Without an attempt time, how far back the history is read.
DEFAULT_WINDOW = 86400.0


@dataclass(frozen=True, slots=True)
class Sought:
    """What one part looks like in the history and the queue."""

    chat_id: str
    is_text: bool
    text: str
    since: float


class Landings:
    """Finds sends in the instance's queue and history."""

    def __init__(
        self,
        client: ChatApiClient,
        state: ProviderState,
        hub: Hub,
        instance: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.state = state
        self.hub = hub
        self.instance = instance
        self.clock = clock

    async def find(self, batch: Sequence[Outgoing]) -> list[Landing]:
        claims = Claims(self.hub, self.instance)
        return await find_in_lists(
            batch, claims, plan=self._plan, look_up=self._look_up, answer=self._answer
        )

    async def _plan(self, item: Outgoing) -> Planned[Sought]:
        parts = plan_send(item)
        done: list[str] = []
        if len(parts) > 1:
            stored = await self.state.get(_progress_key(item))
            done = [str(x) for x in stored][: len(parts)] if isinstance(stored, list) else []
            if len(done) == len(parts):
                return Planned(len(parts), None, done)
        part = parts[len(done)]
        body = part.body
        chat_id = str(body.get("chatId") or f"{body.get('phone')}@c.us")
        since = (item.sending_since or self.clock() - DEFAULT_WINDOW) - CLOCK_SKEW
        if part.method == "sendMessage":
            return Planned(len(parts), Sought(chat_id, True, str(body["body"]), since), done)
        if part.method == "sendFile" and body.get("caption"):
            return Planned(len(parts), Sought(chat_id, False, str(body["caption"]), since), done)
        raise PermanentError(
            f"a {part.method} without a text cannot be recognised in Chat API's history",
            code="NOT_RECOGNISABLE",
        )

    async def _look_up(self, sought: list[Sought]) -> Match[Sought]:
        queued = await self._queue()
        history = await self._history(min(s.since for s in sought))

        async def match(wanted: Sought, claims: Claims) -> str | None:
            return await self._match(wanted, queued, history, claims)

        return match

    async def _queue(self) -> list[dict[str, Any]]:
        data = await self.client.call("showMessagesQueue", http_method="GET")
        first = data.get("first100") if isinstance(data, dict) else None
        return [q for q in first or [] if isinstance(q, dict)]

    async def _history(self, since: float) -> list[dict[str, Any]]:
        params = {"min_time": int(since), "limit": 0}
        data = await self.client.call("messages", http_method="GET", params=params)
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise TemporaryError("Chat API messages answered without a messages list")
        own = [m for m in messages if isinstance(m, dict) and m.get("fromMe") is True]
        return sorted(own, key=lambda m: (_number(m.get("time")), _number(m.get("messageNumber"))))

    async def _match(
        self,
        wanted: Sought,
        queued: list[dict[str, Any]],
        history: list[dict[str, Any]],
        claims: Claims,
    ) -> str | None:
        for entry in queued:
            # The queue names the chat in `metadata` or inside the message id
            # (`true_{chatId}_{hex}`); an entry whose chat cannot be told is not ours to take.
            metadata = entry.get("metadata")
            chat = metadata.get("chatId") if isinstance(metadata, dict) else None
            in_id = f"_{wanted.chat_id}_" in str(entry.get("id"))
            if not (chat == wanted.chat_id or (chat is None and in_id)):
                continue
            if str(entry.get("body")) != wanted.text:
                continue
            if found := await claims.take(entry.get("id")):
                return found
        for message in history:
            if message.get("chatId") != wanted.chat_id:
                continue
            if _number(message.get("time")) < wanted.since:
                continue
            is_text = message.get("type") == "chat"
            shown = message.get("body") if is_text else message.get("caption")
            if is_text != wanted.is_text or str(shown or "") != wanted.text:
                continue
            if found := await claims.take(message.get("id")):
                return found
        return None

    async def _answer(
        self, item: Outgoing, parts: int, done: list[str], found: str | None
    ) -> Landing:
        if found is None:
            return NotLanded("not in Chat API's queue nor in its history")
        done = [*done, found]
        if parts == 1:
            return Sent(native_id=found)
        if len(done) < parts:
            # This part went out: the resend continues with the next one.
            await self.state.put(_progress_key(item), done)
            return NotLanded(f"{len(done)} of {parts} parts landed")
        await self.state.delete(_progress_key(item))
        return Sent(native_id=done[0], extra={"parts": done[1:]})


def _progress_key(item: Outgoing) -> str:
    return f"progress:{item.job_id}"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
