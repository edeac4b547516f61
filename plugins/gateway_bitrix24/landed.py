"""Whether a customer message whose send had an unknown outcome is in its open-line chat.

Bitrix24 does not dedupe `imconnector.send.messages`, but it keeps each message's
`message.id` as the `CONNECTOR_MID` param of the chat message, and
`imopenlines.session.history.get` reads a session's messages back with their params. That
method is the one open lines offer to read a chat the calling user is not a member of
(`im.dialog.messages.get` needs membership, and the app's user is rarely in a line's chats):
given `SESSION_ID`, it needs no membership at all.

What it takes is the chat's Bitrix24 ids, which only the portal knows: every send that
succeeds returns them (`session: {ID, CHAT_ID}`), and `Landings.remember` keeps them per
portal, line and customer chat. A chat none of whose messages has reached the portal yet
cannot be read (its ids are unknown), so its message stays parked for a person.

The question is asked for every chat of a batch at once (one `batch` request of up to 50
commands per portal, through the REST client and its limits). The session asked about is
authoritative only if it is the chat's current one: the answer's chat record says which
that is (`entityData1`, sixth field), and if a newer session has begun, that one is read in
a second round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import (
    DeliveryError,
    Landing,
    Message,
    NotLanded,
    Outcome,
    Outgoing,
    PermanentError,
    ProviderState,
    Sent,
    TemporaryError,
)

from .forms import as_dict, as_items, as_str
from .outbound import native_id_for
from .records import parse_target
from .rest import RestClient

HISTORY = "imopenlines.session.history.get"
#: Commands per `batch` request (the portal's own limit).
BATCH_LIMIT = 50
_CHAT_PREFIX = "chat:"
_SESSION_FIELD = 5


@dataclass(frozen=True, slots=True)
class ChatIds:
    """A customer chat's ids inside the portal."""

    chat_id: str
    session_id: str | None = None


@dataclass(slots=True)
class _Read:
    """What one history read said about one chat."""

    mids: dict[str, dict[str, Any]] = field(default_factory=dict)
    session_id: str | None = None
    current_session: str | None = None
    error: DeliveryError | None = None


class Landings:
    """Remembers the portal's ids of customer chats, and asks whether messages landed."""

    def __init__(self, rest: RestClient, state: ProviderState) -> None:
        self.rest = rest
        self.state = state
        self._known: dict[str, ChatIds] = {}

    # remembering ------------------------------------------------------------------------
    async def remember(self, batch: Sequence[Outgoing], outcomes: Sequence[Outcome]) -> None:
        """Keep the chat and session ids that successful sends returned."""
        for item, outcome in zip(batch, outcomes, strict=False):
            if not isinstance(outcome, Sent) or not isinstance(item.event, Message):
                continue
            extra = outcome.extra
            chat_id = as_str(extra.get("bitrix_chat_id"))
            member, line = as_str(extra.get("member_id")), as_str(extra.get("line"))
            if chat_id is None or member is None or line is None:
                continue
            ids = ChatIds(chat_id, as_str(extra.get("session_id")))
            await self._keep(_key(member, line, item.event.conversation_id), ids)

    async def _keep(self, key: str, ids: ChatIds) -> None:
        if self._known.get(key) == ids:
            return
        stored = await self.state.get(key)
        if stored != {"chat_id": ids.chat_id, "session_id": ids.session_id}:
            await self.state.put(key, {"chat_id": ids.chat_id, "session_id": ids.session_id})
        self._known[key] = ids

    async def chat_ids(self, member: str, line: int, conversation: str) -> ChatIds | None:
        """The portal's ids of a customer chat, when a delivered message taught them."""
        return await self._ids(_key(member, str(line), conversation))

    async def _ids(self, key: str) -> ChatIds | None:
        if key not in self._known:
            stored = as_dict(await self.state.get(key))
            chat_id = as_str(stored.get("chat_id"))
            if chat_id is None:
                return None
            self._known[key] = ChatIds(chat_id, as_str(stored.get("session_id")))
        return self._known[key]

    # asking -----------------------------------------------------------------------------
    async def find(self, batch: Sequence[Outgoing]) -> list[Landing]:
        answers: list[Landing | None] = [None] * len(batch)
        portals: dict[str, list[tuple[int, Outgoing, int, ChatIds]]] = {}
        for index, item in enumerate(batch):
            event = item.event
            target = parse_target(item.route.target)
            if not isinstance(event, Message):
                # Changing or deleting a message twice has no second effect.
                answers[index] = NotLanded("an edit or delete may be repeated")
                continue
            if target is None:
                answers[index] = PermanentError("the route has no Bitrix24 target")
                continue
            member, line = target
            ids = await self._ids(_key(member, str(line), event.conversation_id))
            if ids is None:
                answers[index] = PermanentError(
                    "no message of this chat has reached the portal before, so the gateway "
                    "does not know the chat's id there and cannot read it",
                    code="CHAT_UNKNOWN",
                )
                continue
            portals.setdefault(member, []).append((index, item, line, ids))
        for member, entries in portals.items():
            await self._portal(member, entries, answers)
        return [a if a is not None else TemporaryError("not asked") for a in answers]

    async def _portal(
        self,
        member: str,
        entries: list[tuple[int, Outgoing, int, ChatIds]],
        answers: list[Landing | None],
    ) -> None:
        chats = {ids.chat_id: ids.session_id for _, _, _, ids in entries}
        reads = await self._read(member, {chat: {"SESSION_ID": s} for chat, s in chats.items()})
        # A session that is not the chat's current one may be missing a newer message.
        again: dict[str, dict[str, Any]] = {}
        for chat, read in reads.items():
            if read.error is not None or read.current_session == read.session_id:
                continue
            session = read.current_session
            again[chat] = {"SESSION_ID": session} if session is not None else {}
        if again:
            for chat, read in (await self._read(member, again)).items():
                read.mids = {**reads[chat].mids, **read.mids}
                reads[chat] = read
        for index, item, line, ids in entries:
            read = reads[ids.chat_id]
            answers[index] = _landing(member, line, item, ids, read)
            if read.error is None and read.current_session not in (None, ids.session_id):
                # Later questions about this chat start from its current session.
                current = ChatIds(ids.chat_id, read.current_session)
                await self._keep(_key(member, str(line), item.event.conversation_id), current)

    async def _read(self, member: str, chats: dict[str, dict[str, Any]]) -> dict[str, _Read]:
        """One history read per chat (`SESSION_ID` given or not), in `batch` requests."""
        reads: dict[str, _Read] = {}
        keyed = {f"h{n}": chat for n, chat in enumerate(chats)}
        names = list(keyed)
        for start in range(0, len(names), BATCH_LIMIT):
            chunk = names[start : start + BATCH_LIMIT]
            commands = {
                name: (HISTORY, {"CHAT_ID": int(keyed[name]), **_present(chats[keyed[name]])})
                for name in chunk
            }
            try:
                if len(commands) == 1:
                    [(name, (method, params))] = commands.items()
                    reply = await self.rest.call(member, method, params)
                    results: dict[str, Any] = {name: reply.result}
                    errors: dict[str, DeliveryError] = {}
                else:
                    batch = await self.rest.batch(member, commands)
                    results, errors = batch.results, batch.errors
            except DeliveryError as exc:
                results, errors = {}, {name: exc for name in chunk}
            for name in chunk:
                chat = keyed[name]
                if name in results:
                    read = _parse(chat, results[name])
                    if "SESSION_ID" not in commands[name][1]:
                        # Read by chat alone: the chat's latest session, current by definition.
                        read.current_session = read.current_session or read.session_id
                    reads[chat] = read
                else:
                    error = errors.get(name) or TemporaryError("the batch did not run this read")
                    reads[chat] = _Read(error=error)
        return reads


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) for k, v in params.items() if as_str(v) and str(v).isdigit()}


def _parse(chat: str, result: Any) -> _Read:
    body = as_dict(result)
    read = _Read(session_id=as_str(body.get("sessionId")))
    for message in as_items(body.get("message")):
        entry = as_dict(message)
        for mid in _connector_mids(as_dict(entry.get("params"))):
            read.mids[mid] = entry
    record = as_dict(as_dict(body.get("chat")).get(chat))
    fields = (as_str(record.get("entityData1")) or "").split("|")
    if len(fields) > _SESSION_FIELD and fields[_SESSION_FIELD].isdigit():
        read.current_session = fields[_SESSION_FIELD]
    return read


def _connector_mids(params: dict[str, Any]) -> list[str]:
    """The external ids in a message's params, however the key is spelled
    (`CONNECTOR_MID` as stored, `connectorMid` as the history method shows it)."""
    for key, value in params.items():
        if str(key).replace("_", "").lower() == "connectormid":
            return [m for m in (as_str(v) for v in as_items(value) or [value]) if m]
    return []


def _landing(member: str, line: int, item: Outgoing, ids: ChatIds, read: _Read) -> Landing:
    event = item.event
    assert isinstance(event, Message)
    found = read.mids.get(event.native_id)
    if found is not None:
        user_id = event.sender.id or event.conversation_id
        extra: dict[str, Any] = {
            "member_id": member,
            "line": line,
            "chat_id": event.conversation_id,
            "bitrix_chat_id": ids.chat_id,
            "reconciled": True,
        }
        if (session := read.session_id or ids.session_id) is not None:
            extra["session_id"] = session
        if (author := as_str(found.get("senderid"))) is not None:
            extra["bitrix_user_id"] = author
        return Sent(native_id_for(event.native_id, user_id, event.conversation_id), extra)
    if read.error is not None:
        return read.error
    if read.current_session is None or read.current_session != read.session_id:
        return TemporaryError("the chat's current session is unknown", code="SESSION_UNKNOWN")
    return NotLanded(f"not in session {read.session_id} of chat {ids.chat_id}")


def _key(member: str, line: str, conversation: str) -> str:
    return f"{_CHAT_PREFIX}{member}:{line}:{conversation}"
