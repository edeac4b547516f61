"""WhatsApp as a Bitrix24 SMS provider: the handler `messageservice.sender.add` points at.

"Send SMS" in a CRM card (`module_id=crm`), an automation rule or a business process
(`module_id=bizproc`) makes the portal POST, form-encoded like an event:
`type=SMS`, `code` (our sender's code), `message_id` (the portal's id, the one
`messageservice.message.status.update` takes), `message_to`, `message_body`,
`properties[phone_number]`, `properties[message_text]`, `bindings` or `workflow_id`,
`document_id`, `document_type`, `ts` and `auth[...]`.

The call is authenticated like an event (`auth[application_token]` of an installed portal,
compared in constant time) and answered at once: the message becomes an inbound event of
this instance, committed before the answer and deduplicated on the portal's `message_id`,
then sent to the channel by the pipeline in order behind the conversation's other
messages, retried, and parked visibly when it cannot go. A number that cannot be a
WhatsApp number or a sender whose number is no longer linked is refused with 422 and
reported `failed`, with the reason sent to the CRM user as a notification. A first line
`#template name:language | parameter | …` names a WhatsApp template (`crm_templates`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from gateway import (
    BadRequest,
    Hub,
    InboundEvent,
    Message,
    NotAPhoneNumber,
    Route,
    Sender,
    WebhookResult,
)

from .crm_reports import CrmOrigin, CrmReporter
from .crm_setup import CrmSetup
from .crm_templates import BadTemplateChoice, from_sms_text
from .forms import as_dict, as_int, as_str
from .records import PortalRecord, parse_target

log = logging.getLogger("gateway.bitrix24")

Routes = Callable[[str], Awaitable[list[Route]]]


@dataclass(frozen=True, slots=True)
class SmsCall:
    code: str
    message_id: str
    to: str
    body: str
    user_id: int | None


def read_sms(form: dict[str, Any]) -> SmsCall:
    properties = as_dict(form.get("properties"))
    code, message_id = as_str(form.get("code")), as_str(form.get("message_id"))
    if not code or not message_id:
        raise BadRequest("an SMS provider call carries `code` and `message_id`")
    to = as_str(form.get("message_to")) or as_str(properties.get("phone_number")) or ""
    body = as_str(form.get("message_body")) or as_str(properties.get("message_text")) or ""
    user_id = as_int(as_dict(form.get("auth")).get("user_id"))
    return SmsCall(code, message_id, to, body, user_id)


async def crm_route(
    hub: Hub, instance: str, member_id: str, channel: str | None
) -> tuple[Route, int] | None:
    """The route (and its line) a CRM message of `member_id` takes to `channel`: the
    portal's lowest line linked to it that carries messages from the CRM."""
    found = []
    for route in await hub.routes():
        target = parse_target(route.target) if route.crm == instance else None
        if target is None or target[0] != member_id or route.channel != channel:
            continue
        if route.carries(instance):
            found.append((target[1], route))
    if not found:
        return None
    line, route = min(found, key=lambda pair: pair[0])
    return route, line


class SmsProvider:
    def __init__(self, instance: str, hub: Hub, setup: CrmSetup, reporter: CrmReporter) -> None:
        self.instance = instance
        self.hub = hub
        self.setup = setup
        self.reporter = reporter

    async def handle(self, form: dict[str, Any], record: PortalRecord) -> WebhookResult:
        call = read_sms(form)
        member = record.member_id
        channels = {r.channel for r in await self.hub.routes() if r.crm == self.instance}
        channel = self.setup.channel_of(call.code, channels)
        origin = CrmOrigin(
            via="sms",
            member_id=member,
            line=0,
            chat_id=call.to or "-",
            phone=call.to,
            text=call.body,
            user_id=call.user_id,
            code=call.code,
            message_id=call.message_id,
        )
        found = await crm_route(self.hub, self.instance, member, channel)
        if found is None:
            reason = (
                f"the WhatsApp number of sender {call.code} is not linked to an open line of "
                "this portal any more: link it on the connector's settings page"
            )
            return await self._refuse(origin, reason)
        route, line = found
        if not call.body.strip():
            return await self._refuse(origin, "the message is empty")
        try:
            template, text = from_sms_text(call.body)
        except BadTemplateChoice as exc:
            return await self._refuse(origin, str(exc))
        try:
            conversation = self.hub.conversation_for_phone(route.channel, call.to)
        except NotAPhoneNumber as exc:
            return await self._refuse(origin, f"not a WhatsApp number: {exc}")
        phone = "".join(ch for ch in conversation.split("@", 1)[0] if ch.isdigit())
        origin = CrmOrigin(
            via="sms",
            member_id=member,
            line=line,
            chat_id=conversation,
            phone=phone,
            text=call.body,
            user_id=call.user_id,
            code=call.code,
            message_id=call.message_id,
        )
        message = Message(
            conversation_id=conversation,
            native_id=f"sms-{call.message_id}",
            sender=Sender(id=f"bitrix24:{call.user_id or 0}"),
            text=text,
            extra=origin.to_extra() | ({"template": template.to_extra()} if template else {}),
        )
        key = f"bitrix24:{member}:sms:{call.message_id}"
        log.info(
            "SMS %s of %s queued to %s on %s", call.message_id, record.domain, phone, route.name
        )
        return WebhookResult(events=[InboundEvent(key, message, route.target)])

    async def _refuse(self, origin: CrmOrigin, reason: str) -> WebhookResult:
        problem = await self.reporter.fail_now(origin, reason)
        if problem is not None:
            log.error(
                "could not report SMS %s of portal %s failed: %s",
                origin.message_id,
                origin.member_id,
                problem,
            )
        body = {"ok": False, "status": "failed", "error": reason}
        return WebhookResult(response=JSONResponse(body, status_code=422))
