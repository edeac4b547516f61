"""Client -> operator: customer messages, edits and deletes into open-line chats.

A batch from the pipeline may mix portals, lines and kinds. Items are grouped per portal and
cut into `imconnector.send.messages` / `update.messages` / `delete.messages` commands of at
most `messages_per_command` items, which travel in as few HTTP requests as possible (a
`batch` of up to 50 commands, or a plain call when there is only one); see `packing.py`.
Within a request all items of a chat are in one command, requests go one after another, and
a line whose command failed gets nothing more in this round, so a chat's messages never
overtake each other.

Bitrix24 does not deduplicate `message.id`: a send is never repeated blindly after a timeout
(that is an `AmbiguousError`; the pipeline then reads the chat back, see `landed.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway import (
    AmbiguousError,
    Attachment,
    DeliveryError,
    Edit,
    Fetcher,
    FetchError,
    MediaStorage,
    Message,
    Outcome,
    Outgoing,
    PermanentError,
    Sent,
    TemporaryError,
    Throttled,
)

from .avatars import Avatars
from .formatting import inert, normalize_phone, quote_bbcode, sanitize_name, whatsapp_to_bbcode
from .forms import as_dict, as_items, as_str
from .packing import Command, Item, pack
from .records import PortalStore, parse_target
from .rest import BLOCKED_PROBE_AFTER, DEFAULT_TIMEOUT, FILES_TIMEOUT, RestClient
from .texts import LazyTranslator, PortalLanguages, Translator, looks_like_gateway_text

log = logging.getLogger("gateway.bitrix24")

SEND = "imconnector.send.messages"
UPDATE = "imconnector.update.messages"
DELETE = "imconnector.delete.messages"
#: Items per command unless the instance says otherwise (the API reference: keep 1-10).
MESSAGES_PER_COMMAND = 10
#: A parked line is tried again after this long (the admin may have switched it back on).
PROBE_AFTER = 60.0
PORTAL_WIDE = frozenset({"NOT_INSTALLED", "NEEDS_REINSTALL", "UNPAID"})
_USER_SEPARATOR = "|u:"


def native_id_for(message_id: str, user_id: str, chat_id: str) -> str:
    """`Sent.native_id`: the `message.id` sent, plus the user id when it is not the chat's
    (update/delete find a message by message, chat and user)."""
    return message_id if user_id == chat_id else f"{message_id}{_USER_SEPARATOR}{user_id}"


def split_native_id(native_id: str, chat_id: str) -> tuple[str, str]:
    message_id, separator, user_id = native_id.rpartition(_USER_SEPARATOR)
    if not separator:
        return native_id, chat_id
    return message_id, user_id


class Outbox:
    def __init__(
        self,
        rest: RestClient,
        store: PortalStore,
        media: MediaStorage,
        fetcher: Fetcher,
        *,
        public_url: str,
        connector_id: str,
        messages_per_command: int = MESSAGES_PER_COMMAND,
        clock: Callable[[], float] = time.time,
        languages: PortalLanguages | None = None,
    ) -> None:
        self.rest = rest
        self.store = store
        self.languages = languages or PortalLanguages(rest, store)
        self.media = media
        self.fetcher = fetcher
        self.media_prefix = public_url.rstrip("/") + "/media/"
        self.connector_id = connector_id
        self.messages_per_command = max(1, messages_per_command)
        self.clock = clock
        self.avatars = Avatars(store.state, media, fetcher)

    async def send(self, batch: Sequence[Outgoing]) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(batch)
        portals: dict[str, list[tuple[int, Outgoing, int]]] = {}
        for index, outgoing in enumerate(batch):
            target = parse_target(outgoing.route.target)
            if target is None:
                outcomes[index] = PermanentError(
                    f"route {outgoing.route.name!r} has no Bitrix24 target "
                    '(expected target = "{member_id}/{line id}")',
                    code="NO_TARGET",
                )
                continue
            portals.setdefault(target[0], []).append((index, outgoing, target[1]))
        await asyncio.gather(
            *(self._portal(member, entries, outcomes) for member, entries in portals.items())
        )
        return outcomes

    async def _portal(
        self, member_id: str, entries: list[tuple[int, Outgoing, int]], outcomes: list[Outcome]
    ) -> None:
        try:
            await self.rest.usable(member_id)
        except DeliveryError as exc:
            for index, _, _ in entries:
                outcomes[index] = exc
            return
        items: list[Item] = []
        held: dict[tuple[int, str], DeliveryError] = {}
        for index, outgoing, line in entries:
            chat = (line, outgoing.event.conversation_id)
            parked = self.store.parked(member_id, line)
            if parked is not None and self.clock() - parked.parked_at < PROBE_AFTER:
                outcomes[index] = PermanentError(parked.text, code=parked.code)
            elif chat in held:
                # An earlier message of this chat waits for a retry: this one must not pass it.
                outcomes[index] = _not_attempted(held[chat])
            else:
                try:
                    items.append(await self._prepare(member_id, index, outgoing, line))
                except DeliveryError as exc:
                    outcomes[index] = exc
                    if isinstance(exc, TemporaryError):
                        held[chat] = exc
        failed: dict[int, DeliveryError] = {}
        probed: set[str] = set()
        for request in pack(items, self.messages_per_command):
            runnable: list[Command] = []
            probes: list[Command] = []
            for command in request:
                blocked = failed.get(command.line)
                paused = self.rest.paused_for(member_id, command.method)
                probing = self.rest.probing(member_id, command.method)
                if blocked is not None:
                    _fill(outcomes, command, _not_attempted(blocked))
                elif paused is not None or (probing and command.method in probed):
                    pause = Throttled(
                        f"{command.method} is paused by the portal's operation time limit",
                        code="OPERATION_TIME_LIMIT",
                        retry_after=paused if paused is not None else BLOCKED_PROBE_AFTER,
                    )
                    _fill(outcomes, command, pause)
                    failed[command.line] = pause
                elif probing:
                    # Blocked earlier inside a batch, end unknown: one command goes alone,
                    # so a still-blocked method answers with its own reset time.
                    probed.add(command.method)
                    probes.append(command)
                else:
                    runnable.append(command)
            for group in ([[probe] for probe in probes] + [runnable]) if probes else [runnable]:
                if not group:
                    continue
                try:
                    results = await self._execute(member_id, group)
                except DeliveryError as exc:
                    for command in group:
                        await self._apply(member_id, command, exc, outcomes)
                        failed[command.line] = exc
                    if exc.code in PORTAL_WIDE:
                        # Nothing else can go to this portal in this round either.
                        failed = {i.line: exc for i in items}
                    continue
                for command, result in zip(group, results, strict=True):
                    error = await self._apply(member_id, command, result, outcomes)
                    if error is not None:
                        failed[command.line] = error

    # building ------------------------------------------------------------------------
    async def _prepare(self, member_id: str, index: int, outgoing: Outgoing, line: int) -> Item:
        event = outgoing.event
        if isinstance(event, Message):
            return await self._message(member_id, index, outgoing, event, line)
        if outgoing.target_native_id is None:
            raise PermanentError("no Bitrix24 id for the message to change", code="UNKNOWN_MESSAGE")
        message_id, user_id = split_native_id(outgoing.target_native_id, event.conversation_id)
        entry: dict[str, Any] = {"id": message_id}
        if isinstance(event, Edit):
            entry["text"] = whatsapp_to_bbcode(event.text) or " "
        payload = {"user": {"id": user_id}, "message": entry, "chat": {"id": event.conversation_id}}
        method = UPDATE if isinstance(event, Edit) else DELETE
        return Item(index, outgoing, line, method, payload, outgoing.target_native_id)

    async def _message(
        self, member_id: str, index: int, outgoing: Outgoing, msg: Message, line: int
    ) -> Item:
        user = _user(msg)
        user_id = str(user["id"])
        photo = None
        url = msg.sender.avatar_url
        if url and not msg.is_group and not msg.from_me:
            photo = await self.avatars.picture(member_id, line, msg.conversation_id, url)
            if photo is not None:
                user["picture"] = photo[0]
        texts = self.languages.lazy(member_id)
        parts: list[str] = []
        if msg.from_me:
            label = (await texts.get()).gettext("chat.from_business_phone")
            parts.append(f"[i]{label}[/i]")
        elif msg.is_note:
            parts.append("[i]" + (await texts.get()).gettext("chat.gateway_note") + "[/i]")
        if msg.is_group and not msg.from_me and (author := _author(msg)):
            parts.append(f"[b]{inert(author)}:[/b]")
        if msg.forwarded:
            parts.append("[i]" + (await texts.get()).gettext("chat.forwarded") + "[/i]")
        if msg.quoted_text:
            parts.append(quote_bbcode(whatsapp_to_bbcode(msg.quoted_text)))
        elif outgoing.quoted_target_id or msg.quoted_native_id:
            parts.append(">>" + (await texts.get()).gettext("chat.reply_to_earlier"))
        if msg.text:
            parts.append(whatsapp_to_bbcode(msg.text))
        if msg.location is not None:
            parts.append(_location(msg, await texts.get()))
        for contact in msg.contacts:
            phones = ", ".join(contact.phones)
            label = (await texts.get()).gettext("chat.contact")
            card = inert(f"{contact.name}" + (f" {phones}" if phones else ""))
            parts.append(f"[b]{label}[/b] {card}")
        files = []
        for attachment in msg.attachments:
            entry, note = await self._file(attachment, texts)
            if entry is not None:
                files.append(entry)
            if note:
                parts.append(note)
            if attachment.caption and attachment.caption != msg.text:
                parts.append(whatsapp_to_bbcode(attachment.caption))
        text = "\n".join(p for p in parts if p)
        if text and not msg.is_note and looks_like_gateway_text(text):
            # The gateway's notices must stay unforgeable: a customer's look-alike is labelled.
            label = (await texts.get()).gettext("chat.customer_text")
            text = f"[i]{label}[/i]\n{text}"
        if not text and not files:
            text = (await texts.get()).gettext("chat.empty_message")
        message: dict[str, Any] = {
            "id": msg.native_id,
            "date": int(msg.timestamp or self.clock()),
            "text": text,
        }
        if files:
            message["files"] = files
        chat: dict[str, Any] = {"id": msg.conversation_id}
        chat_name = msg.conversation_name or (
            None if msg.is_group or msg.from_me else msg.sender.name
        )
        if chat_name:
            chat["name"] = chat_name[:100]
        payload = {"user": user, "message": message, "chat": chat}
        await self.store.remember_user(member_id, line, msg.conversation_id, user)
        native = native_id_for(msg.native_id, user_id, msg.conversation_id)
        remember = photo[1] if photo is not None else None
        return Item(index, outgoing, line, SEND, payload, native, len(files), remember)

    async def _file(
        self, attachment: Attachment, texts: LazyTranslator
    ) -> tuple[dict[str, Any] | None, str | None]:
        """A `files[]` entry Bitrix24 can download anonymously, or a note why not."""
        url, name = attachment.url, attachment.filename
        mime = attachment.mime_type
        if not url.startswith(self.media_prefix):
            try:
                stored = await self.media.rehost(
                    url, self.fetcher, filename=attachment.filename, mime_type=attachment.mime_type
                )
            except FetchError as exc:
                if exc.permanent:  # refused, too large, or a 4xx: no retry brings it
                    return None, _missing(attachment, str(exc), await texts.get())
                raise TemporaryError(f"cannot fetch an attachment: {exc}", code="MEDIA") from None
            url, name, mime = stored.url, stored.filename, stored.mime_type or mime
        entry: dict[str, Any] = {"url": url, "name": name or url.rsplit("/", 1)[-1] or "file"}
        if mime:
            entry["type"] = mime
        return entry, None

    # calling -------------------------------------------------------------------------
    async def _execute(self, member_id: str, commands: list[Command]) -> list[Any]:
        """One HTTP request; per command its result, or the `DeliveryError` it got."""
        sends = any(c.method == SEND for c in commands)
        timeout = FILES_TIMEOUT if any(c.files for c in commands) else DEFAULT_TIMEOUT
        if len(commands) == 1:
            command = commands[0]
            reply = await self.rest.call(
                member_id,
                command.method,
                self._params(command),
                ambiguous=sends,
                read_timeout=timeout,
            )
            return [reply.result]
        keyed = {f"c{i}": (c.method, self._params(c)) for i, c in enumerate(commands)}
        batch = await self.rest.batch(member_id, keyed, ambiguous=sends, read_timeout=timeout)
        results: list[Any] = []
        for key in keyed:
            if key in batch.errors:
                results.append(batch.errors[key])
            elif key in batch.results:
                results.append(batch.results[key])
            else:
                results.append(TemporaryError("the batch did not run this command", code="NOT_RUN"))
        return results

    def _params(self, command: Command) -> dict[str, Any]:
        return {
            "CONNECTOR": self.connector_id,
            "LINE": command.line,
            "MESSAGES": [item.payload for item in command.items],
        }

    async def _apply(
        self, member_id: str, command: Command, result: Any, outcomes: list[Outcome]
    ) -> DeliveryError | None:
        """Per-item outcomes of one command; the command's error if it failed as a whole."""
        if isinstance(result, DeliveryError):
            if result.code == "NOT_ACTIVE_LINE":
                await self.store.park(member_id, command.line, result.code or "", result.text)
                log.warning("line %s of portal %s parked: %s", command.line, member_id, result)
            _fill(outcomes, command, _for_command(result, command))
            return result
        body = as_dict(result)
        rows = [as_dict(r) for r in as_items(as_dict(body.get("DATA")).get("RESULT"))]
        if not rows and body.get("SUCCESS") is not True:
            errors = [str(e) for e in as_items(body.get("ERRORS"))] or ["refused"]
            error = PermanentError(", ".join(errors), code=errors[0])
            _fill(outcomes, command, error)
            return error
        if self.store.parked(member_id, command.line) is not None:
            await self.store.unpark(member_id, command.line)
        for position, item in enumerate(command.items):
            row = _row_for(rows, position, item)
            outcome = outcomes[item.index] = self._outcome(member_id, command, item, row)
            if item.remember is not None and isinstance(outcome, Sent):
                await self.avatars.remember(*item.remember)
        return None

    def _outcome(
        self, member_id: str, command: Command, item: Item, row: dict[str, Any] | None
    ) -> Outcome:
        if row is None:
            text = "the portal's answer has no result for this message"
            if command.method == SEND:
                return AmbiguousError(text, code="NO_RESULT")
            return TemporaryError(text, code="NO_RESULT")
        if row.get("SUCCESS") not in (True, "Y", "1", 1):
            errors = [str(e) for e in as_items(row.get("ERRORS"))] or ["refused"]
            return PermanentError(", ".join(errors), code=errors[0])
        if command.method != SEND:
            return Sent(item.native_id)
        extra: dict[str, Any] = {
            "member_id": member_id,
            "line": command.line,
            "chat_id": item.payload["chat"]["id"],
        }
        if (user := as_str(row.get("user"))) is not None:
            extra["bitrix_user_id"] = user
        session = as_dict(row.get("session"))
        if session:
            extra["session_id"] = as_str(session.get("ID"))
            extra["bitrix_chat_id"] = as_str(session.get("CHAT_ID"))
        return Sent(item.native_id, extra)


def _user(msg: Message) -> dict[str, Any]:
    """The `user` block: who the chat's customer is in Bitrix24, which keys a chat by it.

    A person's chat is theirs; a group is one customer, the group (each message names its
    participant in the text), so all of it stays one open-line chat; what the business typed
    on its phone goes into the chat as the customer's side, like the gateway's notes.
    """
    if msg.is_group or msg.from_me:
        user: dict[str, Any] = {"id": msg.conversation_id}
        name = msg.conversation_name if msg.conversation_name != msg.conversation_id else None
        number = None if msg.is_group else normalize_phone(msg.conversation_id)
    else:
        user = {"id": msg.sender.id or msg.conversation_id}
        name = msg.sender.name
        number = normalize_phone(msg.sender.phone) or normalize_phone(msg.sender.id)
    first, last = sanitize_name(name)
    if first:
        user["name"] = first
    if last:
        user["last_name"] = last
    if number is not None:
        user["phone"] = number
        user["skip_phone_validate"] = "Y"
    return user


def _author(msg: Message) -> str | None:
    """A group participant as the chat shows them: name and phone number."""
    phone = normalize_phone(msg.sender.phone) or normalize_phone(msg.sender.id)
    name = (msg.sender.name or "").strip() or None
    if name and phone:
        return f"{name} ({phone})"
    return name or phone or msg.sender.id or None


def _row_for(rows: list[dict[str, Any]], position: int, item: Item) -> dict[str, Any] | None:
    wanted = str(item.payload["message"]["id"])
    if position < len(rows) and _row_id(rows[position]) in (wanted, None):
        return rows[position]
    return next((row for row in rows if _row_id(row) == wanted), None)


def _row_id(row: dict[str, Any]) -> str | None:
    return as_str(as_dict(row.get("message")).get("id"))


def _fill(outcomes: list[Outcome], command: Command, error: DeliveryError) -> None:
    for item in command.items:
        outcomes[item.index] = error


def _for_command(error: DeliveryError, command: Command) -> DeliveryError:
    # Changing or deleting twice has no second effect; only sends must not be repeated.
    if isinstance(error, AmbiguousError) and command.method != SEND:
        return TemporaryError(error.text, code=error.code)
    return error


def _not_attempted(cause: DeliveryError) -> DeliveryError:
    if isinstance(cause, PermanentError) and cause.code in PORTAL_WIDE | {"NOT_ACTIVE_LINE"}:
        return cause
    return TemporaryError(
        "not sent: an earlier message of the same line or chat is to be retried first",
        code="NOT_ATTEMPTED",
        retry_after=getattr(cause, "retry_after", None),
    )


def _location(msg: Message, t: Translator) -> str:
    location = msg.location
    assert location is not None
    label = inert(", ".join(p for p in (location.name, location.address) if p))
    link = f"https://maps.google.com/?q={location.latitude},{location.longitude}"
    title = "[b]" + t.gettext("chat.location") + "[/b]"
    return f"{title} {label}\n{link}" if label else f"{title} {link}"


def _missing(attachment: Attachment, reason: str, t: Translator) -> str:
    name = inert(attachment.filename or attachment.kind)  # the customer named the file
    return "[i]" + t.gettext("chat.file_not_passed", name=name, reason=reason[:160]) + "[/i]"
