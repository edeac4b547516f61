"""`messageservice.*`, `bizproc.robot.*`, `bizproc.event.send`, `im.notify.system.add`,
and the CRM playing them: a manager's "Send SMS", a robot running in an automation rule.

Shapes follow the public docs (api-reference/messageservice, api-reference/bizproc/
bizproc-robot): sender handler calls and robot calls are form POSTs, as the queue server
sends events, with an `auth` block carrying the `application_token`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .envelope import CallContext, RestError, require_app
from .events import post_form
from .formdata import php_empty, php_form_encode, upper_keys

if TYPE_CHECKING:
    from .portal import FakePortal

_CODE = re.compile(r"[a-zA-Z0-9._-]+")
_PROPERTY_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
SMS_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")


@dataclass
class SmsMessage:
    """A message the CRM handed to a REST sender, and the statuses the app reported."""

    message_id: str
    code: str
    to: str
    body: str
    statuses: list[str] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return self.statuses[-1] if self.statuses else None


@dataclass
class RobotRun:
    """One robot activity waiting in a workflow for `bizproc.event.send`."""

    token: str
    code: str
    properties: dict[str, Any]
    returned: dict[str, Any] | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class CrmState:
    senders: dict[str, dict[str, Any]] = field(default_factory=dict)
    sms: dict[str, SmsMessage] = field(default_factory=dict)
    robots: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, RobotRun] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)


def _invalid(text: str) -> RestError:
    return RestError(400, "ERROR_SENDER_VALIDATION_FAILURE", text)


def _check_code(code: str) -> None:
    if not code:
        raise _invalid("Empty sender code!")
    if not _CODE.fullmatch(code):
        raise _invalid("Wrong sender code!")


async def sender_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    if not p:
        raise _invalid("Empty data!")
    code = str(p.get("CODE") or "")
    _check_code(code)
    if php_empty(p.get("NAME")):
        raise _invalid("Empty sender NAME!")
    if php_empty(p.get("TYPE")):
        raise _invalid("Empty sender message TYPE!")
    if p.get("TYPE") != "SMS":
        raise _invalid("Unknown sender message TYPE!")
    if code in portal.crm.senders:
        raise RestError(400, "ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
    portal.crm.senders[code] = p
    return True


async def sender_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    code = str(p.get("CODE") or "")
    _check_code(code)
    if code not in portal.crm.senders:
        raise RestError(400, "ERROR_SENDER_NOT_FOUND", "Sender not found!")
    changes = {k: v for k, v in p.items() if k in ("HANDLER", "NAME", "DESCRIPTION")}
    if not changes:
        raise _invalid("Empty data!")
    portal.crm.senders[code].update(changes)
    return True


async def sender_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    return list(portal.crm.senders)


async def sender_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    code = str(upper_keys(params).get("CODE") or "")
    _check_code(code)
    if portal.crm.senders.pop(code, None) is None:
        raise RestError(400, "ERROR_SENDER_NOT_FOUND", "Sender not found!")
    return True


async def status_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    code = str(p.get("CODE") or "")
    _check_code(code)
    message = portal.crm.sms.get(str(p.get("MESSAGE_ID") or ""))
    if message is None or message.code != code:
        raise RestError(400, "ERROR_MESSAGE_NOT_FOUND", "Message not found!")
    status = str(p.get("STATUS") or "")
    if status not in SMS_STATUSES:
        raise RestError(400, "ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!")
    message.statuses.append(status)
    return True


def _activity_error(text: str) -> RestError:
    return RestError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", text)


def _check_properties(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _activity_error("Wrong properties array!")
    for key, prop in value.items():
        if not _PROPERTY_KEY.fullmatch(str(key)):
            raise _activity_error(f"Wrong property key {key}!")
        if not isinstance(prop, dict) or php_empty(prop.get("Name") or prop.get("NAME")):
            raise _activity_error(f"Empty property NAME {key}!")


def _check_robot(fields: dict[str, Any], *, adding: bool) -> None:
    handler = fields.get("HANDLER")
    if adding or handler is not None:
        url = urlsplit(str(handler or ""))
        if url.scheme not in ("http", "https"):
            raise RestError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")
        if not url.hostname:
            raise RestError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    if adding and php_empty(fields.get("NAME")):
        raise _activity_error("Empty activity NAME!")
    _check_properties(fields.get("PROPERTIES"))
    _check_properties(fields.get("RETURN_PROPERTIES"))


async def robot_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    if not p:
        raise _activity_error("Empty data!")
    code = str(p.get("CODE") or "")
    if not code:
        raise _activity_error("Empty activity code!")
    if not _CODE.fullmatch(code):
        raise _activity_error("Wrong activity code!")
    _check_robot(p, adding=True)
    if code in portal.crm.robots:
        raise RestError(
            400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Robot already installed!"
        )
    portal.crm.robots[code] = p
    return True


async def robot_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    code = str(p.get("CODE") or "")
    if code not in portal.crm.robots:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    fields = upper_keys(p.get("FIELDS") or {}) if isinstance(p.get("FIELDS"), dict) else {}
    if not fields:
        raise _activity_error("No fields to update.")
    _check_robot(fields, adding=False)
    portal.crm.robots[code].update(fields)
    return True


async def robot_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    return list(portal.crm.robots)


async def robot_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    code = str(upper_keys(params).get("CODE") or "")
    if portal.crm.robots.pop(code, None) is None:
        raise RestError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
    return True


async def event_send(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = upper_keys(params)
    run = portal.crm.runs.get(str(p.get("EVENT_TOKEN") or ""))
    if run is None or run.returned is not None:
        raise RestError(403, "ACCESS_DENIED", "Access denied!")
    values = p.get("RETURN_VALUES")
    run.returned = dict(values) if isinstance(values, dict) else {}
    if not php_empty(p.get("LOG_MESSAGE")):
        run.log.append(str(p["LOG_MESSAGE"]))
    return True


async def notify_system(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    require_app(ctx)
    p = upper_keys(params)
    if php_empty(p.get("USER_ID")) or php_empty(p.get("MESSAGE")):
        raise RestError(400, "USER_ID_EMPTY", "Recipient is not specified")
    portal.crm.notifications.append(p)
    return len(portal.crm.notifications)


METHODS = {
    "messageservice.sender.add": sender_add,
    "messageservice.sender.update": sender_update,
    "messageservice.sender.list": sender_list,
    "messageservice.sender.delete": sender_delete,
    "messageservice.message.status.update": status_update,
    "bizproc.robot.add": robot_add,
    "bizproc.robot.update": robot_update,
    "bizproc.robot.list": robot_list,
    "bizproc.robot.delete": robot_delete,
    "bizproc.event.send": event_send,
    "im.notify.system.add": notify_system,
}


# -- the CRM at work --------------------------------------------------------------------


async def send_sms(
    portal: FakePortal,
    code: str,
    phone: str,
    text: str,
    *,
    user_id: int = 1,
    owner: tuple[int, int] = (3, 7),
) -> tuple[SmsMessage, httpx.Response]:
    """A manager presses "Send" in a CRM card (`owner`: CRM type id and entity id, 3 =
    contact): the portal calls the sender's handler with the message."""
    sender = portal.crm.senders[code]
    message = SmsMessage(secrets.token_hex(16), code, phone, text)
    portal.crm.sms[message.message_id] = message
    form = {
        "module_id": "crm",
        "bindings": [{"OWNER_TYPE_ID": owner[0], "OWNER_ID": owner[1]}],
        "properties": {"phone_number": phone, "message_text": text},
        "type": "SMS",
        "code": code,
        "message_id": message.message_id,
        "message_to": phone,
        "message_body": text,
        "ts": int(portal.now()),
        "auth": portal.event_auth(user_id),
    }
    delivery = await post_form(portal.client(), str(sender["HANDLER"]), php_form_encode(form), code)
    portal.deliveries.append(delivery)
    if delivery.response is None:
        raise RuntimeError(f"the SMS handler did not answer: {delivery.error}")
    return message, delivery.response


async def run_robot(
    portal: FakePortal,
    code: str,
    properties: dict[str, Any],
    *,
    document: tuple[str, str, str] = ("crm", "CCrmDocumentDeal", "DEAL_5"),
    user_id: int = 1,
) -> tuple[RobotRun, httpx.Response]:
    """An automation rule reaches the robot: the portal calls its handler and waits."""
    robot = portal.crm.robots[code]
    token = f"{secrets.token_hex(7)}.{secrets.token_hex(4)}|A{secrets.token_hex(8)}"
    run = RobotRun(token, code, dict(properties))
    portal.crm.runs[token] = run
    form = {
        "workflow_id": secrets.token_hex(12),
        "code": code,
        "document_id": list(document),
        "document_type": [document[0], document[1], document[2].split("_", 1)[0]],
        "event_token": token,
        "properties": properties,
        "use_subscription": "Y",
        "timeout_duration": 0,
        "ts": int(portal.now()),
        "auth": portal.event_auth(user_id),
    }
    delivery = await post_form(portal.client(), str(robot["HANDLER"]), php_form_encode(form), code)
    portal.deliveries.append(delivery)
    if delivery.response is None:
        raise RuntimeError(f"the robot handler did not answer: {delivery.error}")
    return run, delivery.response
