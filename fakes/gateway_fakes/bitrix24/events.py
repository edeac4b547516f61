"""Event payloads (spec section 5) and their delivery as PHP-style forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from .formdata import php_form_encode
from .state import Chat, ChatMessage, EventDelivery, Session, StoredFile

MESSAGE_ADD = "ONIMCONNECTORMESSAGEADD"
MESSAGE_UPDATE = "ONIMCONNECTORMESSAGEUPDATE"
MESSAGE_DELETE = "ONIMCONNECTORMESSAGEDELETE"
DIALOG_START = "ONIMCONNECTORDIALOGSTART"
DIALOG_FINISH = "ONIMCONNECTORDIALOGFINISH"
STATUS_DELETE = "ONIMCONNECTORSTATUSDELETE"
LINE_DELETE = "ONIMCONNECTORLINEDELETE"
APP_INSTALL = "ONAPPINSTALL"
APP_UNINSTALL = "ONAPPUNINSTALL"

KNOWN_EVENTS = frozenset(
    {
        MESSAGE_ADD,
        MESSAGE_UPDATE,
        MESSAGE_DELETE,
        DIALOG_START,
        DIALOG_FINISH,
        STATUS_DELETE,
        LINE_DELETE,
        APP_INSTALL,
        APP_UNINSTALL,
        "ONAPPUPDATE",
        "ONAPPTEST",
        "ONOFFLINEEVENT",
    }
)

# What the Bitrix queue server sends; handlers sometimes log or filter on it.
USER_AGENT = "Bitrix24 Webhook Engine"


def event_form(
    event: str, handler_id: int | None, data: Any, ts: int, auth: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """The form fields of one event POST, in the order Bitrix writes them."""
    payload: dict[str, Any] = {"event": event}
    if handler_id is not None:
        payload["event_handler_id"] = handler_id
    payload["data"] = data
    payload["ts"] = ts
    payload["auth"] = auth
    return php_form_encode(payload)


async def post_form(
    http: httpx.AsyncClient, url: str, form: list[tuple[str, str]], event: str
) -> EventDelivery:
    """POST once. Bitrix logs a failure and never resends, so neither do we."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT}
    try:
        response = await http.post(url, content=urlencode(form), headers=headers)
    except httpx.HTTPError as exc:
        return EventDelivery(event, url, form, error=f"{type(exc).__name__}: {exc}")
    return EventDelivery(event, url, form, response=response)


def signed(text: str, operator_name: str) -> str:
    """The NEED_SIGNATURE prefix, as imopenlines builds it (no `[br]` for empty text)."""
    if not text:
        return f"[b]{operator_name}:[/b]"
    return f"[b]{operator_name}:[/b][br] {text}"


def _im(message: ChatMessage) -> dict[str, Any]:
    return {"chat_id": message.bitrix_chat_id, "message_id": message.im_message_id}


def message_add_item(message: ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": message.author_id, "text": message.text}
    if message.files:
        body["files"] = message.files
    return {"im": _im(message), "message": body, "chat": {"id": message.chat_id}}


def message_update_item(message: ChatMessage) -> dict[str, Any]:
    body = {"id": list(message.external_ids), "text": message.text}
    return {"im": _im(message), "message": body, "chat": {"id": message.chat_id}}


def message_delete_items(message: ChatMessage) -> list[dict[str, Any]]:
    # One item per external id, with a scalar `message.id` (unlike update).
    return [
        {"im": _im(message), "message": {"id": external}, "chat": {"id": message.chat_id}}
        for external in message.external_ids
    ]


def connector_data(connector: str, line: int, key: str, items: list[Any]) -> dict[str, Any]:
    return {"CONNECTOR": connector, "LINE": str(line), key: items}


def dialog_item(chat: Chat, session: Session) -> dict[str, Any]:
    return {
        "connector": {
            "connector_id": chat.connector,
            "line_id": str(chat.line),
            "chat_id": chat.external_id,
            "user_id": str(chat.user_id),
        },
        "session": {
            "id": str(session.id),
            "closed": "Y" if session.closed else "N",
            "parent_id": str(session.parent_id),
            "close_term": "10",
        },
        "chat": {"id": chat.external_id},
        "user": {"id": str(chat.user_id)},
    }


def dialog_data(chat: Chat, session: Session) -> dict[str, Any]:
    return connector_data(chat.connector, chat.line, "DATA", [dialog_item(chat, session)])


def status_delete_data(connector: str, line: int) -> dict[str, Any]:
    return {"connector": connector, "line": str(line)}


IMAGE_TYPES = ("jpe", "jpg", "jpeg", "png", "webp", "gif", "bmp")


def file_entry(base_url: str, file: StoredFile, style: str) -> dict[str, Any]:
    """An outgoing file object; `style` picks the classic `link` shape, the newer
    `downloadLink` shape (relative URL, `mime`, `sizef`), or both."""
    extension = file.name.rsplit(".", 1)[-1].lower() if "." in file.name else ""
    is_image = file.mime.startswith("image/") or extension in IMAGE_TYPES
    entry: dict[str, Any] = {
        "name": file.name,
        "type": "image" if is_image else "file",
        "size": len(file.content),
    }
    if style in ("link", "both"):
        # Images get a `#img.ext` fragment on the public short link (im module).
        fragment = f"#img.{extension or 'jpg'}" if is_image else ""
        entry["link"] = f"{base_url}/~{file.code}{fragment}"
    if style in ("downloadLink", "both"):
        entry["downloadLink"] = f"/rest/download.json?token={file.code}"
        entry["mime"] = file.mime
        entry["sizef"] = f"{len(file.content) / 1024:.2f} KB"
    return entry
