"""The automation robots: "Send WhatsApp message" and "Wait for the customer's WhatsApp reply".

Both are registered with `USE_SUBSCRIPTION=Y` (`crm_setup`), so the portal POSTs their
handler through its queue server, form-encoded like an event: `code`, `event_token`,
`workflow_id`, `document_id[]`, `document_type[]`, `properties[...]`, `ts` and `auth[...]`,
and the workflow waits until the app answers with `bizproc.event.send {EVENT_TOKEN,
RETURN_VALUES, LOG_MESSAGE}`.

* Send: the message is queued like an SMS provider's (`messageservice`), keyed on the
  event token; its fate comes back as `status` (`sent`/`failed`), `message_id` (WhatsApp's)
  and `error` (`crm_reports`). A template name (Cloud API) rides in `extra["template"]`.
* Wait: a waiter `{portal, conversation, token, deadline}` is kept in the instance state.
  When a customer message of that conversation is delivered into the portal, the robot gets
  `status=replied`, `reply_text`, `message_id`; when the deadline passes first,
  `status=timeout`. Waiters are shared by every process through the store: a version key
  tells a process when to reload them, one read per delivered batch.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.responses import JSONResponse

from gateway import (
    BadRequest,
    DeliveryError,
    Hub,
    InboundEvent,
    Message,
    NotAPhoneNumber,
    Outcome,
    Outgoing,
    PermanentError,
    ProviderState,
    Sender,
    Sent,
    WebhookResult,
)

from .crm_reports import CrmOrigin, CrmReporter
from .crm_setup import robot_codes
from .crm_templates import BadTemplateChoice, from_robot
from .forms import as_dict, as_int, as_items, as_str
from .messageservice import crm_route
from .records import PortalRecord, parse_target
from .rest import RestClient

log = logging.getLogger("gateway.bitrix24")

WAIT_PREFIX = "wait:"
VERSION_KEY = "waiters-version"
DEFAULT_WAIT_MINUTES = 60
MAX_WAIT_MINUTES = 60 * 24 * 30


class Robots:
    def __init__(
        self,
        instance: str,
        connector_id: str,
        hub: Hub,
        state: ProviderState,
        rest: RestClient,
        reporter: CrmReporter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.send_code, self.wait_code = robot_codes(connector_id)
        self.hub = hub
        self.state = state
        self.rest = rest
        self.reporter = reporter
        self.clock = clock
        self.waiters: dict[str, dict[str, Any]] = {}
        self.version: Any = None

    # the handler -----------------------------------------------------------------------
    async def handle(self, form: dict[str, Any], record: PortalRecord) -> WebhookResult:
        code, token = as_str(form.get("code")), as_str(form.get("event_token"))
        if not token or code not in (self.send_code, self.wait_code):
            raise BadRequest(f"unknown robot {code!r} or no event_token")
        props = as_dict(form.get("properties"))
        channel = as_str(props.get("channel"))
        user_id = as_int(as_dict(form.get("auth")).get("user_id"))
        phone = as_str(props.get("phone")) or ""
        origin = CrmOrigin(
            "robot", record.member_id, 0, phone or "-", phone, "", user_id, event_token=token
        )
        found = await crm_route(self.hub, self.instance, record.member_id, channel)
        if found is None:
            reason = f"WhatsApp number {channel!r} is not linked to an open line of this portal"
            return await self._refuse(origin, reason)
        route, line = found
        try:
            conversation = self.hub.conversation_for_phone(route.channel, phone)
        except NotAPhoneNumber as exc:
            return await self._refuse(origin, f"not a WhatsApp number: {exc}")
        digits = "".join(ch for ch in conversation.split("@", 1)[0] if ch.isdigit())
        if code == self.wait_code:
            minutes = as_int(props.get("timeout_minutes")) or DEFAULT_WAIT_MINUTES
            await self.add_waiter(record.member_id, conversation, token, minutes)
            return WebhookResult(response=JSONResponse({"ok": True, "status": "waiting"}))
        text = as_str(props.get("text")) or ""
        try:
            template = from_robot(
                as_str(props.get("template")) or "", as_items(props.get("template_params"))
            )
        except BadTemplateChoice as exc:
            return await self._refuse(origin, str(exc))
        if not text.strip() and template is None:
            return await self._refuse(origin, "neither a text nor a template to send")
        origin = CrmOrigin(
            "robot", record.member_id, line, conversation, digits, text, user_id,
            event_token=token,
        )  # fmt: skip
        extra: dict[str, Any] = origin.to_extra()
        if template is not None:
            extra["template"] = template.to_extra()
        digest = hashlib.sha256(token.encode()).hexdigest()[:24]
        message = Message(
            conversation_id=conversation,
            native_id=f"robot-{digest}",
            sender=Sender(id=f"bitrix24:{user_id or 0}"),
            text=text,
            extra=extra,
        )
        key = f"bitrix24:{record.member_id}:robot:{digest}"
        return WebhookResult(events=[InboundEvent(key, message, route.target)])

    async def _refuse(self, origin: CrmOrigin, reason: str) -> WebhookResult:
        problem = await self.reporter.fail_now(origin, reason)
        if problem is not None:
            log.error("could not tell portal %s's robot: %s", origin.member_id, problem)
        body = {"ok": False, "status": "failed", "error": reason}
        return WebhookResult(response=JSONResponse(body, status_code=422))

    # waiters ---------------------------------------------------------------------------
    async def add_waiter(self, member_id: str, conversation: str, token: str, minutes: int) -> None:
        minutes = max(1, min(minutes, MAX_WAIT_MINUTES))
        digest = hashlib.sha256(token.encode()).hexdigest()[:24]
        waiter = {
            "member_id": member_id,
            "conversation": conversation,
            "token": token,
            "deadline": self.clock() + minutes * 60.0,
        }
        await self.state.put(f"{WAIT_PREFIX}{digest}", waiter)
        await self._bump()

    async def _bump(self) -> None:
        self.version = f"{self.clock()}:{id(self)}:{len(self.waiters)}"
        await self.state.put(VERSION_KEY, self.version)
        await self._reload()

    async def _reload(self) -> None:
        self.waiters = {k: v for k, v in await self.state.items(WAIT_PREFIX) if isinstance(v, dict)}

    async def _fresh(self) -> None:
        version = await self.state.get(VERSION_KEY)
        if version != self.version:
            self.version = version
            await self._reload()

    async def delivered(self, batch: Sequence[Outgoing], outcomes: Sequence[Outcome]) -> None:
        """Customer messages just delivered into portals: answer the robots waiting."""
        replies = [
            (parse_target(item.route.target), item.event)
            for item, outcome in zip(batch, outcomes, strict=True)
            # The gateway's own notes (a failure explained in the chat) are no reply.
            if isinstance(outcome, Sent)
            and isinstance(item.event, Message)
            and not item.event.is_note
        ]
        if not replies:
            return
        await self._fresh()
        if not self.waiters:
            return
        for target, message in replies:
            for key, waiter in list(self.waiters.items()):
                if target is None or waiter.get("member_id") != target[0]:
                    continue
                if waiter.get("conversation") != message.conversation_id:
                    continue
                values = {
                    "status": "replied",
                    "reply_text": message.text,
                    "message_id": message.native_id,
                }
                await self._answer(key, waiter, values, "WhatsApp: the customer replied")

    async def check_waiters(self, now: float | None = None) -> int:
        """Time out waiters past their deadline; returns how many were answered."""
        now = self.clock() if now is None else now
        await self._fresh()
        done = 0
        for key, waiter in list(self.waiters.items()):
            deadline = waiter.get("deadline")
            if isinstance(deadline, int | float) and deadline <= now:
                values = {"status": "timeout", "reply_text": "", "message_id": ""}
                done += await self._answer(key, waiter, values, "WhatsApp: no reply in time")
        return done

    async def _answer(
        self, key: str, waiter: dict[str, Any], values: dict[str, str], log_message: str
    ) -> int:
        params = {"EVENT_TOKEN": waiter.get("token"), "RETURN_VALUES": values}
        params["LOG_MESSAGE"] = log_message
        member_id = str(waiter.get("member_id"))
        try:
            await self.rest.call(member_id, "bizproc.event.send", params)
        except DeliveryError as exc:
            if exc.code != "ACCESS_DENIED" and not isinstance(exc, PermanentError):
                log.warning("robot of portal %s not answered yet: %s", member_id, exc)
                return 0
            log.info("robot of portal %s no longer waits: %s", member_id, exc)
        self.waiters.pop(key, None)
        await self.state.delete(key)
        await self._bump()
        return 1
