"""What people do in the Bitrix UI: operators writing, editing, closing dialogs,
admins disconnecting or deleting lines. Each action changes state and emits the
event Bitrix would send."""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import events
from .state import Chat, ChatMessage, Connector, Emission, StoredFile

if TYPE_CHECKING:
    from .portal import FakePortal

FileSpec = str | Mapping[str, Any]


def resolve_connector(portal: FakePortal, line: int, connector: str | None) -> Connector:
    """The named connector, else the one working on `line`, else the only one."""
    registered = portal.state.connectors
    if connector is not None:
        if connector.lower() not in registered:
            raise LookupError(f"connector {connector!r} is not registered")
        return registered[connector.lower()]
    working = [c for c in registered.values() if portal.state.line_ok(c.id, line)]
    candidates = working or list(registered.values())
    if not candidates:
        raise LookupError("no connector is registered on the portal")
    return candidates[0]


def find_chat(portal: FakePortal, line: int, chat_id: str, connector: str | None) -> Chat:
    owner = resolve_connector(portal, line, connector)
    chat = portal.state.chats.get((owner.id, line, str(chat_id)))
    if chat is None:
        raise LookupError(
            f"no chat {chat_id!r} on line {line} for {owner.id!r}: a client must write first"
        )
    return chat


def store_file(portal: FakePortal, spec: FileSpec) -> StoredFile:
    info: Mapping[str, Any] = {"name": spec} if isinstance(spec, str) else spec
    name = str(info["name"])
    content = info.get("content", f"fake content of {name}".encode())
    mime = info.get("mime") or mimetypes.guess_type(name)[0] or "application/octet-stream"
    code = f"F{next(portal.state.file_ids)}"
    stored = StoredFile(code, name, bytes(content), str(mime))
    portal.state.files[code] = stored
    return stored


async def writes(
    portal: FakePortal,
    line: int,
    chat_id: str,
    text: str,
    *,
    files: Sequence[FileSpec] | None,
    operator_name: str,
    operator_id: int,
    signature: bool,
    connector: str | None,
    quote: ChatMessage | None = None,
) -> Emission:
    chat = find_chat(portal, line, chat_id, connector)
    owner = portal.state.connectors[chat.connector]
    entries = [
        events.file_entry(portal.base_url, store_file(portal, f), portal.file_style)
        for f in files or []
    ]
    if quote is not None:
        text = quote_block(portal, quote) + text
    body = events.signed(text, operator_name) if signature and owner.need_signature else text
    session = chat.session or (chat.sessions[-1] if chat.sessions else None)
    message = ChatMessage(
        im_message_id=next(portal.state.message_ids),
        connector=chat.connector,
        line=line,
        chat_id=chat.external_id,
        bitrix_chat_id=chat.bitrix_chat_id,
        author="operator",
        author_id=operator_id,
        text=body,
        files=entries,
        session_id=session.id if session else None,
        date=int(portal.now()),
        sending=True,
    )
    portal.state.messages.append(message)
    data = events.connector_data(
        chat.connector, line, "MESSAGES", [events.message_add_item(message)]
    )
    if not portal.state.line_ok(chat.connector, line):
        # Bitrix shows the operator an error instead of calling the connector.
        message.failed = True
        return Emission(events.MESSAGE_ADD, data, [], message)
    delivered = await portal.emit(events.MESSAGE_ADD, data, user_id=operator_id)
    return Emission(events.MESSAGE_ADD, data, delivered, message)


#: The line around a quote in a chat message (54 hyphens, as the messenger writes it).
QUOTE_LINE = "-" * 54


def quote_block(portal: FakePortal, quoted: ChatMessage) -> str:
    """What the messenger's *Quote* action puts before the operator's text: the quoted
    message between two lines of 54 hyphens, under its author's name and time
    (`Name [dd.mm.yyyy hh:mm:ss]`). Nothing else of the quoted message (no id) travels
    with it: `REPLY_ID` of a *Reply* is not among the params imopenlines passes to a
    connector."""
    name = " ".join(str(quoted.user.get(k) or "") for k in ("name", "last_name")).strip()
    if not name:
        name = f"User {quoted.author_id}"
    when = time.strftime("%d.%m.%Y %H:%M:%S", time.gmtime(quoted.date or portal.now()))
    # The chat keeps an operator's text without the signature connectors get, and the
    # messenger quotes a message without the quotes it holds itself.
    text = _SIGNED.sub("", quoted.text)
    text = _QUOTED.sub("", text).strip("\n")
    return f"{QUOTE_LINE}\n{name} [{when}]\n{text}\n{QUOTE_LINE}\n"


_SIGNED = re.compile(r"\A\[b\][^\[\]\n]+:\[/b\](?:\[br\])? ?")
_QUOTED = re.compile(r"^-{54}\n.*?^-{54}\n?", re.S | re.M)


def _message(portal: FakePortal, message: ChatMessage | int) -> ChatMessage:
    if isinstance(message, ChatMessage):
        return message
    found = portal.state.find_message(message)
    if found is None:
        raise LookupError(f"no message with im id {message}")
    return found


async def edits(
    portal: FakePortal,
    message: ChatMessage | int,
    text: str,
    *,
    operator_name: str,
    signature: bool,
) -> Emission:
    target = _message(portal, message)
    owner = portal.state.connectors.get(target.connector)
    target.history.append(target.text)
    need_signature = owner is not None and owner.need_signature
    target.text = events.signed(text, operator_name) if signature and need_signature else text
    data = events.connector_data(
        target.connector, target.line, "MESSAGES", [events.message_update_item(target)]
    )
    # Only messages acked with external ids (CONNECTOR_MID) produce an event.
    if not (target.external_ids and owner and owner.edit_internal_messages):
        return Emission(events.MESSAGE_UPDATE, data, [], target)
    delivered = await portal.emit(events.MESSAGE_UPDATE, data, user_id=target.author_id)
    return Emission(events.MESSAGE_UPDATE, data, delivered, target)


async def deletes(portal: FakePortal, message: ChatMessage | int) -> Emission:
    target = _message(portal, message)
    owner = portal.state.connectors.get(target.connector)
    target.deleted = True
    data = events.connector_data(
        target.connector, target.line, "MESSAGES", events.message_delete_items(target)
    )
    if not (target.external_ids and owner and owner.del_internal_messages):
        return Emission(events.MESSAGE_DELETE, data, [], target)
    delivered = await portal.emit(events.MESSAGE_DELETE, data, user_id=target.author_id)
    return Emission(events.MESSAGE_DELETE, data, delivered, target)


async def dialog(
    portal: FakePortal, line: int, chat_id: str, connector: str | None, *, finish: bool
) -> Emission:
    chat = find_chat(portal, line, chat_id, connector)
    if finish:
        session = chat.session
        if session is None:
            raise LookupError(f"chat {chat_id!r} has no open session")
        session.closed = True
        event = events.DIALOG_FINISH
    else:
        _, started = portal.state.ensure_chat(chat.connector, line, chat.external_id, 0, None)
        session = started or chat.session
        assert session is not None
        event = events.DIALOG_START
    data = events.dialog_data(chat, session)
    return Emission(event, data, await portal.emit(event, data))


async def disconnect(portal: FakePortal, line: int, connector: str | None) -> Emission:
    owner = resolve_connector(portal, line, connector)
    portal.state.statuses.pop((owner.id, line), None)
    data = events.status_delete_data(owner.id, line)
    return Emission(events.STATUS_DELETE, data, await portal.emit(events.STATUS_DELETE, data))


async def delete_line(portal: FakePortal, line: int) -> Emission:
    portal.remove_line(line)
    data = str(line)
    return Emission(events.LINE_DELETE, data, await portal.emit(events.LINE_DELETE, data))
