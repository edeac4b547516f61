"""Methods besides imconnector: `event.*`, `app.info`, `user.admin`, `imopenlines.config.*`,
`placement.*`; the CRM's (`messageservice.*`, `bizproc.*`) are in `crm`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import crm, events, imconnector
from .envelope import CallContext, RestError, require_app
from .formdata import lower_keys, php_empty, php_int, upper_keys
from .state import EventBinding

if TYPE_CHECKING:
    from .portal import FakePortal

Handler = Callable[["FakePortal", dict[str, Any], CallContext], Awaitable[Any]]


def _binding_params(params: dict[str, Any]) -> tuple[str, str, int, bool]:
    p = lower_keys(params)
    offline = str(p.get("event_type", "online")).lower() == "offline"
    return (
        str(p.get("event", "")).upper(),
        str(p.get("handler", "")),
        php_int(p.get("auth_type")),
        offline,
    )


async def event_bind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    event, handler, auth_type, offline = _binding_params(params)
    if event not in events.KNOWN_EVENTS:
        raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    if not offline:
        url = urlsplit(handler)
        if url.scheme not in ("http", "https"):
            raise RestError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported event handler protocol")
        if "." not in (url.hostname or ""):
            raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    else:
        handler = ""
    for bound in portal.state.bindings:
        if (bound.event, bound.handler, bound.auth_type) == (event, handler, auth_type):
            raise RestError(
                400, "ERROR_CORE", "Unable to set event handler: Handler already binded"
            )
    binding = EventBinding(next(portal.state.binding_ids), event, handler, auth_type, offline)
    portal.state.bindings.append(binding)
    return True


async def event_unbind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    event, handler, auth_type, _ = _binding_params(params)
    given_auth = "auth_type" in lower_keys(params)
    keep, count = [], 0
    for bound in portal.state.bindings:
        match = bound.event == event and (not handler or bound.handler == handler)
        if match and (not given_auth or bound.auth_type == auth_type):
            count += 1
        else:
            keep.append(bound)
    portal.state.bindings = keep
    return {"count": count}


async def event_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    return [
        {
            "event": b.event,
            "handler": b.handler,
            "auth_type": str(b.auth_type),
            "offline": int(b.offline),
        }
        for b in portal.state.bindings
    ]


async def app_info(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    app = portal.app_record
    info: dict[str, Any] = {
        "ID": app.id,
        "CODE": app.code,
        "VERSION": app.version,
        "STATUS": app.status,
        "INSTALLED": portal.installed and portal.installed_finished,
        "PAYMENT_EXPIRED": app.payment_expired,
        "DAYS": app.days,
        "LANGUAGE_ID": app.language_id,
        "LICENSE": app.license,
        "LICENSE_TYPE": app.license_type,
        "LICENSE_FAMILY": app.license_family,
    }
    return info


async def user_admin(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    # Scope `basic`, any user: whether the token's user may change the portal's settings.
    return ctx.user_id in portal.admins


async def user_current(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    # Scope `basic`, any user: the token's own user (ids are strings in REST answers).
    return {"ID": str(ctx.user_id), "ACTIVE": True, "NAME": f"User {ctx.user_id}"}


def _matches(config: dict[str, Any], conditions: dict[str, Any]) -> bool:
    for key, expected in conditions.items():
        field = re.sub(r"^[=!<>%@]+", "", str(key)).upper()
        if str(config.get(field)) != str(expected):
            return False
    return True


async def config_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = upper_keys(params)
    query = lower_keys(p.get("PARAMS") or {}) if isinstance(p.get("PARAMS"), dict) else {}
    rows = [line.as_config() for _, line in sorted(portal.state.lines.items())]
    if isinstance(query.get("filter"), dict):
        rows = [row for row in rows if _matches(row, query["filter"])]
    offset = php_int(query.get("offset"))
    limit = min(php_int(query.get("limit")) or 50, 200)
    rows = rows[offset : offset + limit]
    select = query.get("select")
    if isinstance(select, list) and select:
        wanted = {str(s).upper() for s in select}
        rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
    return rows


async def config_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    line = portal.state.lines.get(php_int(upper_keys(params).get("CONFIG_ID")))
    return line.as_config() if line is not None else False


async def config_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    fields = upper_keys(upper_keys(params).get("PARAMS") or {})
    name = str(fields.pop("LINE_NAME", "") or "Open Channel")
    active = fields.pop("ACTIVE", "Y") != "N"
    return portal.add_line(name, active=active, **fields)


async def config_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = upper_keys(params)
    line = portal.state.lines.get(php_int(p.get("CONFIG_ID")))
    if line is None:
        return False
    fields = upper_keys(p.get("PARAMS") or {})
    line.name = str(fields.pop("LINE_NAME", line.name))
    line.active = fields.pop("ACTIVE", "Y" if line.active else "N") != "N"
    line.settings.update(fields)
    return True


async def config_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    line_id = php_int(upper_keys(params).get("CONFIG_ID"))
    if line_id not in portal.state.lines:
        return False
    portal.remove_line(line_id)
    portal.queue_event(events.LINE_DELETE, str(line_id))
    return True


async def session_history(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    """`imopenlines.session.history.get`: a session's messages with their params (the
    external id of a connector message as `connectorMid`), shaped as the API reference
    shows it. By `SESSION_ID` (no chat membership needed), else the chat's last session."""
    p = upper_keys(params)
    session_id, chat_id = php_int(p.get("SESSION_ID")), php_int(p.get("CHAT_ID"))
    if not session_id and not chat_id:
        raise RestError(400, "MISSING_REQUIRED_PARAM", "Session ID or Chat ID must be provided")
    chats = portal.state.chats.values()
    if session_id:
        chat = next((c for c in chats if any(s.id == session_id for s in c.sessions)), None)
    else:
        chat = next((c for c in chats if c.bitrix_chat_id == chat_id), None)
        if chat is not None and chat.sessions:
            session_id = max(s.id for s in chat.sessions)
    if chat is None:
        raise RestError(
            400,
            "ACCESS_DENIED",
            "You cannot open this conversation as you do not have sufficient rights",
        )
    if not session_id:
        raise RestError(
            400, "INVALID_SESSION_ID", "Unable to determine session ID from provided parameters"
        )
    room = chat.bitrix_chat_id
    found = [
        m
        for m in portal.state.messages
        if m.bitrix_chat_id == room and m.session_id == session_id and not m.deleted
    ]
    messages: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for m in sorted(found, key=lambda m: -m.im_message_id):
        message_params: dict[str, Any] = {}
        if m.external_ids:
            message_params["connectorMid"] = list(m.external_ids)
        messages[str(m.im_message_id)] = {
            "id": str(m.im_message_id),
            "chatid": str(room),
            "senderid": str(m.author_id),
            "recipientid": f"chat{room}",
            "date": _iso(m.date or portal.now()),
            "text": m.text,
            "textlegacy": m.text,
            # PHP sends an empty array as `[]`.
            "params": message_params or [],
        }
        name = " ".join(str(m.user.get(k) or "") for k in ("name", "last_name")).strip()
        users[str(m.author_id)] = {
            "id": str(m.author_id),
            "name": name or f"User {m.author_id}",
            "connector": m.author == "client",
            "type": "user",
        }
    current = chat.sessions[-1].id if chat.sessions else 0
    return {
        "chatId": room,
        "canJoin": "Y",
        "canVoteHead": "N",
        "sessionId": session_id,
        "sessionVoteHead": 0,
        "sessionCommentHead": None,
        "userId": f"chat{room}",
        "message": messages or [],
        "usersMessage": {f"chat{room}": list(messages)},
        "users": users or [],
        "openlines": {"canvoteashead": {str(chat.line): False}},
        "userInGroup": [],
        "woUserInGroup": [],
        "chat": {
            str(room): {
                "id": str(room),
                "name": chat.name or "",
                "owner": "0",
                "entityType": "LINES",
                "entityId": f"{chat.connector}|{chat.line}|{chat.external_id}|{chat.user_id}",
                "entityData1": f"Y|LEAD|0|N|N|{current}|0|0|0|0",
                "entityData2": "",
                "entityData3": "",
                "messageCount": len([m for m in portal.state.messages if m.bitrix_chat_id == room]),
                "type": "lines",
            }
        },
        "userBlockChat": [],
        "userInChat": {str(room): [chat.user_id]},
        "files": [],
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(int(timestamp), tz=UTC).isoformat()


async def placement_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    # imconnector.register binds SETTING_CONNECTOR itself; those bindings are listed too.
    automatic = [
        {
            "placement": "SETTING_CONNECTOR",
            "handler": c.placement_handler,
            "title": c.name,
            "options": [],
        }
        for c in portal.state.connectors.values()
    ]
    return automatic + list(portal.state.placements)


async def placement_bind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    if php_empty(p.get("PLACEMENT")) or php_empty(p.get("HANDLER")):
        raise RestError(400, "ERROR_ARGUMENT", "Wrong placement or handler")
    entry = {
        "placement": str(p["PLACEMENT"]),
        "handler": str(p["HANDLER"]),
        "title": str(p.get("TITLE") or ""),
        "options": [],
    }
    if entry in portal.state.placements:
        raise RestError(400, "ERROR_PLACEMENT_HANDLER", "Placement handler already binded")
    portal.state.placements.append(entry)
    return True


async def placement_unbind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    before = len(portal.state.placements)
    portal.state.placements = [
        e
        for e in portal.state.placements
        if not (e["placement"] == p.get("PLACEMENT") and p.get("HANDLER") in (None, e["handler"]))
    ]
    return {"count": before - len(portal.state.placements)}


METHODS: dict[str, Handler] = {
    **imconnector.METHODS,
    "event.bind": event_bind,
    "event.unbind": event_unbind,
    "event.get": event_get,
    "app.info": app_info,
    "user.admin": user_admin,
    "user.current": user_current,
    "imopenlines.config.list.get": config_list,
    "imopenlines.config.get": config_get,
    "imopenlines.config.add": config_add,
    "imopenlines.config.update": config_update,
    "imopenlines.config.delete": config_delete,
    "imopenlines.session.history.get": session_history,
    "placement.get": placement_get,
    "placement.bind": placement_bind,
    "placement.unbind": placement_unbind,
    **crm.METHODS,
}

SCOPES = {
    "imconnector.": "imopenlines",
    "imopenlines.": "imopenlines",
    "placement.": "placement",
    "messageservice.": "messageservice",
    "bizproc.": "bizproc",
    "im.": "im",
}


def scope_of(method: str) -> str | None:
    for prefix, scope in SCOPES.items():
        if method.startswith(prefix):
            return scope
    return None
