"""What became of a message the CRM wrote first, told back where the CRM user looks.

A message from the SMS provider or the "Send WhatsApp message" robot travels like an
operator reply: a job to the channel, then an ack job back to this instance, then status
jobs as WhatsApp reports. Its `extra["b24crm"]` says where it came from, and here:

* accepted by WhatsApp: `messageservice.message.status.update` `sent` (SMS provider) or
  `bizproc.event.send` with `status=sent` and the WhatsApp message id (robot), and the text
  is mirrored into the customer's open-line chat as written by the CRM user
  (`imconnector.send.messages` with `message.user_id`), so the operator sees the whole
  conversation and the customer's answer lands under it;
* refused (no WhatsApp account, window closed without a template, bad number...): status
  `failed` or the robot's `status=failed` with the reason in `error`, a system notification
  with the reason to the CRM user who sent it (`im.notify.system.add`), and a note in the
  chat when there is one;
* WhatsApp reports delivered or read: `delivered` (messageservice has no read status);
  failed later: `undelivered` and a note with WhatsApp's reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gateway import (
    Ack,
    DeliveryError,
    DeliveryStatus,
    Message,
    Outcome,
    PermanentError,
    StatusNotice,
)

from .acks import NOT_DELIVERED
from .crm_texts import text
from .forms import as_dict, as_int, as_items, as_str
from .reasons import explain
from .records import PortalStore
from .rest import RestClient
from .texts import PortalLanguages

log = logging.getLogger("gateway.bitrix24")

CRM_KEY = "b24crm"
# WhatsApp's own `sent` says nothing new: `sent` was reported when the channel took it.
_STATUS_NAMES = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.READ: "delivered",
    DeliveryStatus.FAILED: "undelivered",
}


@dataclass(frozen=True, slots=True)
class CrmOrigin:
    """Where a CRM-written message came from: `Message.extra["b24crm"]`."""

    via: Literal["sms", "robot"]
    member_id: str
    line: int
    chat_id: str
    phone: str
    text: str
    user_id: int | None = None
    code: str | None = None  # the SMS sender's code
    message_id: str | None = None  # the portal's id of the SMS
    event_token: str | None = None  # the robot's

    def to_extra(self) -> dict[str, Any]:
        return {CRM_KEY: asdict(self)}

    @classmethod
    def of(cls, extra: Mapping[str, Any]) -> CrmOrigin | None:
        info = as_dict(extra.get(CRM_KEY))
        via, member_id = as_str(info.get("via")), as_str(info.get("member_id"))
        line, chat_id = as_int(info.get("line")), as_str(info.get("chat_id"))
        if via not in ("sms", "robot") or not member_id or line is None or not chat_id:
            return None
        return cls(
            via="sms" if via == "sms" else "robot",
            member_id=member_id,
            line=line,
            chat_id=chat_id,
            phone=as_str(info.get("phone")) or chat_id,
            text=as_str(info.get("text")) or "",
            user_id=as_int(info.get("user_id")),
            code=as_str(info.get("code")),
            message_id=as_str(info.get("message_id")),
            event_token=as_str(info.get("event_token")),
        )


def is_crm(extra: Mapping[str, Any]) -> bool:
    return CRM_KEY in extra


class CrmReporter:
    def __init__(
        self,
        rest: RestClient,
        store: PortalStore,
        connector_id: str,
        clock: Callable[[], float] = time.time,
        languages: PortalLanguages | None = None,
    ) -> None:
        self.rest = rest
        self.store = store
        self.connector_id = connector_id
        self.clock = clock
        #: Texts the gateway writes on its own go out in the portal's language.
        self.languages = languages or PortalLanguages(rest, store)

    # pipeline hooks ----------------------------------------------------------------------
    async def acknowledge(self, acks: Sequence[Ack]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for ack in acks:
            origin = CrmOrigin.of(ack.message.extra)
            if origin is None or not isinstance(ack.message, Message):
                outcomes.append(None)
            elif ack.error is not None:
                outcomes.append(await self._report(origin, failed=ack.error.text, in_chat=True))
            else:
                outcomes.append(await self._report(origin, sent_id=ack.delivered_id or ""))
        return outcomes

    async def apply_status(self, notices: Sequence[StatusNotice]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for notice in notices:
            origin = CrmOrigin.of(notice.message_extra)
            update = notice.update
            if origin is None or update.status not in _STATUS_NAMES:
                outcomes.append(None)
                continue
            commands: dict[str, tuple[str, dict[str, Any]]] = {}
            if origin.via == "sms":
                commands["status"] = self._status(origin, _STATUS_NAMES[update.status])
            if update.status is DeliveryStatus.FAILED:
                commands["note"] = await self._note(origin, update.error_text, update.error_code)
            outcomes.append(await self._run(origin.member_id, commands))
        return outcomes

    async def fail_now(self, origin: CrmOrigin, reason: str) -> Outcome:
        """A message refused before it was queued (a bad number, an unlinked channel)."""
        return await self._report(origin, failed=reason, in_chat=False)

    # reports -----------------------------------------------------------------------------
    async def _report(
        self,
        origin: CrmOrigin,
        *,
        sent_id: str | None = None,
        failed: str | None = None,
        in_chat: bool = False,
    ) -> Outcome:
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        if origin.via == "sms":
            commands["status"] = self._status(origin, "failed" if failed else "sent")
        elif origin.event_token:
            values = {"status": "failed" if failed else "sent", "message_id": sent_id or ""}
            values["error"] = failed or ""
            commands["robot"] = (
                "bizproc.event.send",
                {
                    "EVENT_TOKEN": origin.event_token,
                    "RETURN_VALUES": values,
                    "LOG_MESSAGE": f"WhatsApp: {failed}" if failed else f"WhatsApp: {sent_id}",
                },
            )
        if failed is not None:
            log.warning(
                "CRM message to %s (portal %s) not sent: %s", origin.phone, origin.member_id, failed
            )
            if origin.user_id:
                language = await self.languages.of(origin.member_id)
                message = text("notify.failed", language, phone=origin.phone, reason=failed[:400])
                commands["notify"] = (
                    "im.notify.system.add",
                    {"USER_ID": origin.user_id, "MESSAGE": message},
                )
            if in_chat:
                commands["note"] = await self._note(origin, failed)
        else:
            commands["mirror"] = await self._mirror(origin, sent_id or "")
        return await self._run(origin.member_id, commands)

    def _status(self, origin: CrmOrigin, status: str) -> tuple[str, dict[str, Any]]:
        return (
            "messageservice.message.status.update",
            {"CODE": origin.code, "MESSAGE_ID": origin.message_id, "STATUS": status},
        )

    async def _mirror(self, origin: CrmOrigin, sent_id: str) -> tuple[str, dict[str, Any]]:
        language = await self.languages.of(origin.member_id)
        user = await self.store.user_block_of(origin.member_id, origin.line, origin.chat_id)
        message: dict[str, Any] = {
            "id": sent_id or f"crm-{origin.message_id or int(self.clock() * 1000)}",
            "date": int(self.clock()),
            "text": f"{text('mirror.sent', language)}\n{origin.text}",
        }
        if origin.user_id:
            message["user_id"] = origin.user_id
        item = {
            "user": {**user, "phone": f"+{origin.phone}", "skip_phone_validate": "Y"},
            "message": message,
            "chat": {"id": origin.chat_id},
        }
        return self._messages(origin, item)

    async def _note(
        self, origin: CrmOrigin, reason: str | None, code: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        t = await self.languages.translator(origin.member_id)
        title = t.gettext(NOT_DELIVERED)
        # Known codes in the portal's language, WhatsApp's own words after them.
        reason = explain(t, code, reason)
        user = await self.store.user_block_of(origin.member_id, origin.line, origin.chat_id)
        stamp = int(self.clock() * 1000)
        item = {
            "user": user,
            "message": {
                "id": f"gw-failed-crm-{origin.message_id or stamp}-{stamp}",
                "date": int(self.clock()),
                "text": f"[b]{title}[/b]: {reason[:400]}\n>>{origin.text[:200]}",
            },
            "chat": {"id": origin.chat_id},
        }
        return self._messages(origin, item)

    def _messages(self, origin: CrmOrigin, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        params = {"CONNECTOR": self.connector_id, "LINE": origin.line, "MESSAGES": [item]}
        return "imconnector.send.messages", params

    async def _run(
        self, member_id: str, commands: dict[str, tuple[str, dict[str, Any]]]
    ) -> Outcome:
        """The status calls first, then what posts into the chat: a retry after a failed
        status call posts nothing twice (a status update and a robot's answer are safe to
        repeat: a second `bizproc.event.send` is refused, which is fine)."""
        first = {k: v for k, v in commands.items() if k in ("status", "robot")}
        then = {k: v for k, v in commands.items() if k not in first}
        for phase in (first, then):
            if not phase:
                continue
            results, errors = await _call_phase(self.rest, member_id, phase)
            if isinstance(errors, DeliveryError):
                return errors
            for key, error in errors.items():
                if key == "robot" and error.code == "ACCESS_DENIED":
                    # The workflow no longer waits (its token expired, it was stopped).
                    log.info("robot of portal %s no longer waits: %s", member_id, error)
                elif key == "notify":
                    # A courtesy on top of the status and the chat note: never retried.
                    log.warning("could not notify a user of portal %s: %s", member_id, error)
                else:
                    return error
            for key in ("mirror", "note"):
                problem = _item_error(results.get(key))
                if problem:
                    return PermanentError(problem, code="IMCONNECTOR_ERROR")
        return None


async def _call_phase(
    rest: RestClient, member_id: str, phase: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, DeliveryError] | DeliveryError]:
    """Results and errors by key: one plain call for one command, else one `batch`; the
    request's own failure as a single error."""
    if len(phase) == 1:
        [(key, (method, params))] = phase.items()
        try:
            return {key: (await rest.call(member_id, method, params)).result}, {}
        except DeliveryError as exc:
            # A refused method is that command's error; an unreachable portal the phase's.
            return {}, {key: exc} if key in ("robot", "notify") else exc
    try:
        reply = await rest.batch(member_id, phase)
    except DeliveryError as exc:
        return {}, exc
    return reply.results, reply.errors


def _item_error(result: Any) -> str | None:
    body = as_dict(result)
    if not body or body.get("SUCCESS") in (True, "Y", "1", 1):
        return None
    errors = [str(e) for e in as_items(body.get("ERRORS"))]
    for row in as_items(as_dict(body.get("DATA")).get("RESULT")):
        errors += [str(e) for e in as_items(as_dict(row).get("ERRORS"))]
    return ", ".join(errors) or None
