"""`imconnector.*` methods (spec section 4), with the envelopes of the PHP source.

Key case follows the source: top-level keys upper-cased, keys inside `MESSAGES`
lower-cased at every depth; `register` upper-cases recursively.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import events
from .envelope import (
    CallContext,
    RestError,
    argument,
    argument_null,
    not_active_line,
    require_app,
)
from .formdata import as_list, deep_keys, php_empty, php_int, upper_keys
from .state import ChatMessage, Connector

if TYPE_CHECKING:
    from .portal import FakePortal

BUILTIN_CONNECTORS = {
    "livechat": "Live chat",
    "telegrambot": "Telegram",
    "network": "Bitrix24.Network",
    "fbinstagramdirect": "Instagram Direct",
}
_FLAGS = (
    "DEL_EXTERNAL_MESSAGES",
    "EDIT_INTERNAL_MESSAGES",
    "DEL_INTERNAL_MESSAGES",
    "NEWSLETTER",
    "NEED_SYSTEM_MESSAGES",
    "NEED_SIGNATURE",
    "CHAT_GROUP",
)
_REGISTER_ERRORS = {
    "ID": ("CONNECTOR_ID_REQUIRED", "Connector ID not specified"),
    "NAME": ("NAME_REQUIRED", "Connector name not specified"),
    "ICON": ("ICON_REQUIRED", "Connector icon not specified"),
    "PLACEMENT_HANDLER": ("NO_PLACEMENT_HANDLER", "Placement handler not specified"),
}


def _require(params: dict[str, Any], *names: str) -> None:
    # PHP `isset`: only a missing key or null fails; "" and "0" pass.
    for name in names:
        if params.get(name) is None:
            raise argument_null(name)


def _provider(portal: FakePortal, params: dict[str, Any]) -> tuple[Connector, int]:
    """The registered connector and line, refusing inactive lines like the provider."""
    connector = portal.state.connectors.get(str(params["CONNECTOR"]))
    if connector is None:
        raise RestError(400, "IMCONNECTOR_NO_CORRECT_PROVIDER", "No correct provider")
    line = php_int(params["LINE"])
    if not portal.state.line_ok(connector.id, line):
        raise not_active_line()
    return connector, line


def _message_call(
    portal: FakePortal, params: dict[str, Any], ctx: CallContext, *, strict: bool
) -> tuple[Connector, int, list[dict[str, Any]]]:
    """The checks every `imconnector.*.messages` / `send.status.*` call makes, in the
    portal's order: app auth, required fields, the messages, then connector and line."""
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR", "LINE", "MESSAGES")
    items = _messages(p, strict=strict)
    connector, line = _provider(portal, p)
    return connector, line, items


def _messages(params: dict[str, Any], *, strict: bool) -> list[dict[str, Any]]:
    messages = deep_keys(params["MESSAGES"], upper=False)
    items = as_list(messages)
    if items is None:
        raise argument("The value of an argument 'MESSAGES' must be of type array")
    for item in items:
        if not isinstance(item, dict):
            if strict:
                raise argument("The MESSAGES parameter must be an array of messages (arrays)")
            continue
        if strict and not all(isinstance(item.get(k), dict) for k in ("user", "message", "chat")):
            raise argument("The incorrect structure of a message inside MESSAGES parameter.")
    return [item for item in items if isinstance(item, dict)]


def _part(item: dict[str, Any], key: str) -> dict[str, Any]:
    value = item.get(key)
    return value if isinstance(value, dict) else {}


async def register(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = deep_keys(params, upper=True)
    if "." in str(p.get("ID") or ""):
        return {
            "result": False,
            "error": "APPLICATION_REGISTRATION_ERROR_POINT",
            "error_description": "The connector ID must not contain a dot",
        }
    icon = p.get("ICON") if isinstance(p.get("ICON"), dict) else {}
    present = {
        "ID": p.get("ID"),
        "NAME": p.get("NAME"),
        "ICON": icon.get("DATA_IMAGE"),
        "PLACEMENT_HANDLER": p.get("PLACEMENT_HANDLER"),
    }
    for key, value in present.items():
        if php_empty(value):
            code, description = _REGISTER_ERRORS[key]
            return {"result": False, "error": code, "error_description": description}
    connector = Connector(
        id=str(p["ID"]).lower(),
        name=str(p["NAME"]),
        icon=icon,
        placement_handler=str(p["PLACEMENT_HANDLER"]),
        icon_disabled=p.get("ICON_DISABLED") if isinstance(p.get("ICON_DISABLED"), dict) else None,
        comment=str(p["COMMENT"]) if p.get("COMMENT") is not None else None,
    )
    for flag in _FLAGS:
        # The source stores a flag only if it `=== true/false`: form strings are ignored.
        if isinstance(p.get(flag), bool):
            setattr(connector, flag.lower(), p[flag])
    portal.state.connectors[connector.id] = connector
    return {"result": True}


async def unregister(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    cid = str(upper_keys(params).get("ID") or "").lower()
    if cid not in portal.state.connectors:
        return {
            "result": False,
            "error": "APPLICATION_UNREGISTRATION_ERROR",
            "error_description": "Failed to unregister the connector",
        }
    for key in [k for k in portal.state.statuses if k[0] == cid]:
        del portal.state.statuses[key]
        portal.queue_event(events.STATUS_DELETE, events.status_delete_data(cid, key[1]))
    del portal.state.connectors[cid]
    return {"result": True}


async def activate(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR", "LINE", "ACTIVE")
    connector, line = str(p["CONNECTOR"]), php_int(p["LINE"])
    if not php_empty(p["ACTIVE"]):
        row = portal.state.status(connector, line)
        row.active = row.connection = row.register = True
        row.error = False
    elif portal.state.statuses.pop((connector, line), None) is not None:
        portal.queue_event(events.STATUS_DELETE, events.status_delete_data(connector, line))
    return True


async def status(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR")
    row = portal.state.status(str(p["CONNECTOR"]), php_int(p.get("LINE")))
    return {
        "LINE": row.line,
        "CONNECTOR": row.connector,
        "ERROR": row.error,
        "CONFIGURED": row.configured,
        "STATUS": row.ok,
    }


async def data_set(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR", "LINE", "DATA")
    given = upper_keys(p["DATA"]) if isinstance(p["DATA"], dict) else {}
    data: dict[str, Any] = {"connector_id": p["CONNECTOR"]}
    for key in ("ID", "URL", "URL_IM", "NAME"):
        if not php_empty(given.get(key)):
            data[key.lower()] = given[key]
    row = portal.state.status(str(p["CONNECTOR"]), php_int(p["LINE"]))
    # Docs say "overwritten"; the source merges into the old data.
    row.data = {**row.data, **data}
    return True


async def connector_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    return {**BUILTIN_CONNECTORS, **{c.id: c.name for c in portal.state.connectors.values()}}


def _fail(item: dict[str, Any], code: str) -> dict[str, Any]:
    return {**item, "SUCCESS": False, "ERRORS": [code]}


async def _receive(
    portal: FakePortal, connector: Connector, line: int, item: dict[str, Any]
) -> dict[str, Any]:
    user, message, chat = _part(item, "user"), _part(item, "message"), _part(item, "chat")
    if php_empty(user.get("id")):
        return _fail(item, "CONNECTOR_PROXY_NO_USER_IM")
    files = [f for f in as_list(message.get("files")) or [] if isinstance(f, dict)]
    kept = [f for f in files if await portal.fetch_file(f)]
    if (php_empty(message.get("text")) and not kept) or php_empty(chat.get("id")):
        return _fail(item, "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA")
    state = portal.state
    user_key = (connector.id, str(user["id"]))
    bitrix_user = state.external_users.setdefault(user_key, next(state.user_ids))
    if state.user_blocks.get(user_key) != user:
        # The user is updated only when the block changed; a picture is downloaded then.
        state.user_blocks[user_key] = dict(user)
        name = " ".join(str(user.get(k) or "") for k in ("name", "last_name")).strip()
        state.user_names[bitrix_user] = name or str(user.get("title") or "") or "Guest"
        picture = user.get("picture")
        if isinstance(picture, dict) and await portal.fetch_file(picture):
            state.photos.setdefault(bitrix_user, []).append(str(picture.get("url")))
    room, started = state.ensure_chat(
        connector.id, line, str(chat["id"]), bitrix_user, chat.get("name")
    )
    if started is not None:
        portal.queue_event(events.DIALOG_START, events.dialog_data(room, started))
    file_ids = [next(state.file_ids) for _ in kept]
    session = room.session
    state.messages.append(
        ChatMessage(
            im_message_id=next(state.message_ids),
            connector=connector.id,
            line=line,
            chat_id=room.external_id,
            bitrix_chat_id=room.bitrix_chat_id,
            # `message.user_id` mirrors a message an operator sent from elsewhere.
            author="client" if php_empty(message.get("user_id")) else "operator",
            author_id=php_int(message.get("user_id")) or bitrix_user,
            text=str(message.get("text") or ""),
            files=kept,
            external_ids=[str(message["id"])] if not php_empty(message.get("id")) else [],
            session_id=session.id if session else None,
            date=php_int(message.get("date")) or None,
            user=user,
        )
    )
    echo = {**message, "files": file_ids}
    if "date" in echo:
        echo["date"] = {}  # a PHP DateTime serializes as an empty object
    extra = {k: user[k] for k in ("skip_phone_validate",) if k in user}
    if message.get("disable_crm") == "Y":
        extra["disable_tracker"] = "Y"
    result: dict[str, Any] = {"user": str(bitrix_user), "message": echo, "chat": chat}
    if extra:
        result["extra"] = extra
    result["SUCCESS"] = True
    if portal.report_sessions and session is not None:
        result["session"] = {"ID": str(session.id), "CHAT_ID": str(room.bitrix_chat_id)}
    return result


async def send_messages(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    connector, line, items = _message_call(portal, params, ctx, strict=True)
    results = [await _receive(portal, connector, line, item) for item in items]
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


def _client_messages(
    portal: FakePortal, connector: str, line: int, item: dict[str, Any]
) -> list[ChatMessage]:
    chat_id = str(_part(item, "chat").get("id", ""))
    external = str(_part(item, "message").get("id", ""))
    return [
        m
        for m in portal.state.messages
        if (m.connector, m.line, m.chat_id) == (connector, line, chat_id)
        and external in m.external_ids
        and not m.deleted
    ]


async def update_messages(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    connector, line, items = _message_call(portal, params, ctx, strict=False)
    results = []
    for item in items:
        found = _client_messages(portal, connector.id, line, item)
        text = _part(item, "message").get("text")
        if not found or php_empty(text):
            results.append(_fail(item, "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"))
            continue
        for message in found:
            message.history.append(message.text)
            message.text = str(text)
        results.append({**item, "user": str(found[0].author_id), "SUCCESS": True})
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


async def delete_messages(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    connector, line, items = _message_call(portal, params, ctx, strict=False)
    results = []
    for item in items:
        found = _client_messages(portal, connector.id, line, item)
        if not found:
            results.append(_fail(item, "CONNECTOR_ERROR_DELETE_MESSAGE"))
            continue
        for message in found:
            message.deleted = True
        results.append({**item, "user": str(found[0].author_id), "SUCCESS": True})
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


async def status_delivery(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    _, _, items = _message_call(portal, params, ctx, strict=False)
    for item in items:
        # Without `im` Bitrix silently does nothing; the external ids become CONNECTOR_MID.
        target = portal.state.find_message(php_int(_part(item, "im").get("message_id")))
        if target is None:
            continue
        ids = _part(item, "message").get("id")
        listed = as_list(ids)
        external = listed if listed is not None else ([] if php_empty(ids) else [ids])
        target.external_ids = [str(x) for x in external]
        target.sending = False
        target.delivered = target.read = True
    return {"SUCCESS": True, "DATA": []}


async def status_reading(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    _message_call(portal, params, ctx, strict=False)
    return {"SUCCESS": True, "DATA": []}


async def set_error(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR", "LINE")
    portal.state.status(str(p["CONNECTOR"]), php_int(p["LINE"])).error = True
    return {"SUCCESS": True, "DATA": []}


async def chat_name_set(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    _require(p, "CONNECTOR", "LINE", "CHAT_ID", "NAME")
    connector, line = _provider(portal, p)
    if not connector.chat_group and php_empty(p.get("USER_ID")):
        raise argument_null("USER_ID")
    chat = portal.state.chats.get((connector.id, line, str(p["CHAT_ID"])))
    if chat is None:
        raise RestError(400, "CHAT_RENAMING_FAILED", "Failed to rename the chat")
    chat.name = str(p["NAME"])
    return {"SUCCESS": True, "DATA": {"RESULT": {}}}


METHODS = {
    "imconnector.register": register,
    "imconnector.unregister": unregister,
    "imconnector.activate": activate,
    "imconnector.status": status,
    "imconnector.connector.data.set": data_set,
    "imconnector.list": connector_list,
    "imconnector.send.messages": send_messages,
    "imconnector.update.messages": update_messages,
    "imconnector.delete.messages": delete_messages,
    "imconnector.send.status.delivery": status_delivery,
    "imconnector.send.status.reading": status_reading,
    "imconnector.set.error": set_error,
    "imconnector.chat.name.set": chat_name_set,
}
