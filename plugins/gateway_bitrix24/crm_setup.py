"""The CRM side of a portal's setup: one SMS provider per linked number, two robots.

**One sender per linked channel.** "Send SMS" in a CRM card, automation rules and business
processes pick a provider by name; a REST provider cannot offer a choice of sender number,
so a portal with several WhatsApp numbers gets one provider per number
(`WhatsApp (sales)`, `WhatsApp (support)`), code `{connector_id}.{channel}`. The robots
take the number as a list property instead.

Registration is reconciled, never blindly repeated: `messageservice.sender.list` and
`bizproc.robot.list` tell what this app registered; missing ones are added, existing ones
updated (a new public URL, a new list of numbers), senders of numbers no longer linked
deleted, and the robots deleted when no number is linked. All in one `batch`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from gateway import DeliveryError, MessageTemplate, PermanentError

from .crm_texts import localized
from .forms import as_items
from .rest import RestClient

log = logging.getLogger("gateway.bitrix24")

SCOPES = ("messageservice", "bizproc", "im")
_CODE_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def sender_code(connector_id: str, channel: str) -> str:
    return f"{connector_id}.{_CODE_CHARS.sub('_', channel)}"


def robot_codes(connector_id: str) -> tuple[str, str]:
    return f"{connector_id}_send", f"{connector_id}_wait"


def _prop(key: str, kind: str, **more: Any) -> dict[str, Any]:
    return {"Name": localized(key), "Type": kind, "Required": "N", "Multiple": "N", **more}


class CrmSetup:
    def __init__(self, rest: RestClient, connector_id: str, sms_url: str, robot_url: str) -> None:
        self.rest = rest
        self.connector_id = connector_id
        self.sms_url = sms_url
        self.robot_url = robot_url

    def channel_of(self, code: str, channels: Iterable[str]) -> str | None:
        """The linked channel whose sender has `code`."""
        for channel in channels:
            if sender_code(self.connector_id, channel) == code:
                return channel
        return None

    async def sync_safely(
        self,
        member_id: str,
        channels: Iterable[str],
        templates: Sequence[MessageTemplate] = (),
    ) -> str | None:
        """`sync`, with a failure logged and returned instead of raised: the connector
        works without the CRM features (an app without the `messageservice` or `bizproc`
        scope, say)."""
        try:
            await self.sync(member_id, sorted(set(channels)), templates)
        except DeliveryError as exc:
            fix = (
                f"add the scopes {', '.join(SCOPES)} in the app's card and reinstall"
                if "scope" in str(exc).lower() or exc.code == "insufficient_scope"
                else 'press "Repair connector setup" on the app page'
            )
            log.warning("CRM setup of portal %s failed: %s (%s)", member_id, exc, fix)
            return f"{exc} ({fix})"
        return None

    async def sync(
        self, member_id: str, channels: list[str], templates: Sequence[MessageTemplate] = ()
    ) -> None:
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        listed = await self.rest.call(member_id, "messageservice.sender.list")
        ours = {
            str(c) for c in as_items(listed.result) if str(c).startswith(f"{self.connector_id}.")
        }
        wanted = {sender_code(self.connector_id, c): c for c in channels}
        for index, (code, channel) in enumerate(sorted(wanted.items())):
            fields = {
                "HANDLER": self.sms_url,
                "NAME": localized("sender.name", channel=channel),
                "DESCRIPTION": localized("sender.description", channel=channel),
            }
            if code in ours:
                commands[f"su{index}"] = ("messageservice.sender.update", {"CODE": code, **fields})
            else:
                commands[f"sa{index}"] = (
                    "messageservice.sender.add",
                    {"CODE": code, "TYPE": "SMS", **fields},
                )
        for index, code in enumerate(sorted(ours - wanted.keys())):
            commands[f"sd{index}"] = ("messageservice.sender.delete", {"CODE": code})
        robots = await self.rest.call(member_id, "bizproc.robot.list")
        registered = {str(c) for c in as_items(robots.result)}
        for index, (code, fields) in enumerate(self.robot_fields(channels, templates).items()):
            if not channels:
                if code in registered:
                    commands[f"rd{index}"] = ("bizproc.robot.delete", {"CODE": code})
            elif code in registered:
                commands[f"ru{index}"] = ("bizproc.robot.update", {"CODE": code, "FIELDS": fields})
            else:
                commands[f"ra{index}"] = ("bizproc.robot.add", {"CODE": code, **fields})
        if not commands:
            return
        reply = await self.rest.batch(member_id, commands)
        for key, error in reply.errors.items():
            if "ALREADY_INSTALLED" in (error.code or ""):
                continue
            raise PermanentError(f"{commands[key][0]} failed: {error}", code=error.code)

    def robot_fields(
        self, channels: list[str], templates: Sequence[MessageTemplate] = ()
    ) -> dict[str, dict[str, Any]]:
        options = {c: f"WhatsApp ({c})" for c in channels}
        channel = _prop("prop.channel", "select", Options=options, Required="Y")
        if channels:
            channel["Default"] = channels[0]
        phone = _prop("prop.phone", "string", Required="Y")
        common = {
            "HANDLER": self.robot_url,
            "USE_SUBSCRIPTION": "Y",
            "FILTER": {"INCLUDE": [["crm"]]},
        }
        send_code, wait_code = robot_codes(self.connector_id)
        send = {
            **common,
            "NAME": localized("robot.send.name"),
            "DESCRIPTION": localized("robot.send.description"),
            "PROPERTIES": {
                "phone": phone,
                "text": _prop("prop.text", "text"),
                "channel": channel,
                "template": template_property(templates),
                "template_params": _prop("prop.template_params", "string", Multiple="Y"),
            },
            "RETURN_PROPERTIES": {
                "status": _prop("ret.status", "string"),
                "message_id": _prop("ret.message_id", "string"),
                "error": _prop("ret.error", "string"),
            },
        }
        wait = {
            **common,
            "NAME": localized("robot.wait.name"),
            "DESCRIPTION": localized("robot.wait.description"),
            "PROPERTIES": {
                "phone": phone,
                "channel": channel,
                "timeout_minutes": _prop("prop.timeout", "int", Default=60),
            },
            "RETURN_PROPERTIES": {
                "status": _prop("ret.status", "string"),
                "reply_text": _prop("ret.reply_text", "string"),
                "message_id": _prop("ret.message_id", "string"),
            },
        }
        return {send_code: send, wait_code: wait}


def template_property(templates: Sequence[MessageTemplate]) -> dict[str, Any]:
    """A list of the approved templates of the linked numbers (Cloud API), or a text field
    for `name` / `name:language` while none are known."""
    if not templates:
        return _prop("prop.template", "string")
    options = {"": "—"}
    for t in sorted(templates, key=lambda t: (t.name, t.language)):
        options[f"{t.name}:{t.language}"] = f"{t.name} ({t.language}, {t.parameter_count})"
    return _prop("prop.template", "select", Options=options, Default="")
