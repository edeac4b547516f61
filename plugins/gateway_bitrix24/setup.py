"""One-time work on a portal: the connector tile, the event handlers, active lines, and
the CRM's SMS senders and robots (`crm_setup`).

Run at every install (a reinstall wipes connectors, line statuses and handlers), from the
app page's "repair" button, and for lines of routes written in settings.toml at startup.
All of it is idempotent: `imconnector.register` updates an existing connector, handlers are
reconciled against `event.get` (stale URLs unbound, missing ones bound, in one `batch`).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import DeliveryError, PermanentError

from .forms import as_dict, as_items
from .rest import RestClient

log = logging.getLogger("gateway.bitrix24")

CONNECTOR_EVENTS = (
    "ONIMCONNECTORMESSAGEADD",
    "ONIMCONNECTORMESSAGEUPDATE",
    "ONIMCONNECTORMESSAGEDELETE",
    "ONIMCONNECTORDIALOGSTART",
    "ONIMCONNECTORDIALOGFINISH",
    "ONIMCONNECTORSTATUSDELETE",
    "ONIMCONNECTORLINEDELETE",
    "ONAPPUNINSTALL",
    # A new app version brings a new application_token (confirmed like an install).
    "ONAPPUPDATE",
)

_ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><path fill="#fff" '
    'd="M32 6C17.6 6 6 17.3 6 31.2c0 4.9 1.4 9.5 4 13.4L6.6 57l12.8-3.3c3.8 2 8.1 3.1 '
    "12.6 3.1 14.4 0 26-11.3 26-25.2S46.4 6 32 6zm0 46c-4 0-7.8-1.1-11-3.1l-.8-.5-7.6 2 "
    '2-7.3-.5-.8C12.1 39 11 35.2 11 31.2 11 20 20.4 11 32 11s21 9 21 20.2S43.6 52 32 52z"/>'
    '<path fill="#fff" d="M43.6 36.6c-.6-.3-3.8-1.9-4.4-2.1-.6-.2-1-.3-1.4.3-.4.6-1.6 '
    "2.1-2 2.5-.4.4-.7.5-1.3.2-.6-.3-2.7-1-5.2-3.2-1.9-1.7-3.2-3.8-3.6-4.4-.4-.6 0-1 "
    ".3-1.3.3-.3.6-.7.9-1.1.3-.4.4-.6.6-1 .2-.4.1-.8 0-1.1-.1-.3-1.4-3.4-1.9-4.6-.5-1.2-1-1-"
    "1.4-1h-1.2c-.4 0-1.1.2-1.6.8-.6.6-2.1 2-2.1 5s2.2 5.9 2.5 6.3c.3.4 4.3 6.6 10.5 9.2 "
    "1.5.6 2.6 1 3.5 1.3 1.5.5 2.8.4 3.9.2 1.2-.2 3.8-1.5 4.3-3 .5-1.5.5-2.8.4-3-.2-.3-.6-.4"
    '-1.2-.7z"/></svg>'
)
ICON = "data:image/svg+xml;base64," + base64.b64encode(_ICON_SVG.encode()).decode()


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """How the connector presents itself; flags go out as real JSON booleans."""

    connector_id: str
    name: str
    placement_url: str
    events_url: str
    need_signature: bool = True

    def register_params(self) -> dict[str, Any]:
        return {
            "ID": self.connector_id,
            "NAME": self.name,
            "ICON": {"DATA_IMAGE": ICON, "COLOR": "#25D366", "SIZE": "90%", "POSITION": "center"},
            "ICON_DISABLED": {"DATA_IMAGE": ICON, "COLOR": "#99adb3", "SIZE": "90%"},
            "PLACEMENT_HANDLER": self.placement_url,
            "CHAT_GROUP": False,
            "NEED_SIGNATURE": self.need_signature,
            "NEED_SYSTEM_MESSAGES": True,
            "EDIT_INTERNAL_MESSAGES": True,
            "DEL_INTERNAL_MESSAGES": True,
            "DEL_EXTERNAL_MESSAGES": True,
            "NEWSLETTER": True,
            "COMMENT": "WhatsApp through WhatsChat Gateway",
        }


class PortalSetup:
    def __init__(
        self,
        rest: RestClient,
        spec: ConnectorSpec,
        crm_sync: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.rest = rest
        self.spec = spec
        #: Registers the CRM's senders and robots last (`crm.Crm.sync`; never raises).
        self.crm_sync = crm_sync

    async def run(self, member_id: str, lines: dict[int, str] | None = None) -> None:
        """Register the connector, reconcile handlers, then activate `lines` (id -> channel)."""
        await self.register(member_id)
        await self.bind_events(member_id)
        for line, channel in sorted((lines or {}).items()):
            try:
                await self.activate(member_id, line, channel)
            except DeliveryError as exc:
                # One deleted line must not stop the others; it shows as parked when used.
                log.warning("could not activate line %s of %s: %s", line, member_id, exc)
        if self.crm_sync is not None:
            await self.crm_sync(member_id)

    async def register(self, member_id: str) -> None:
        reply = await self.rest.call(member_id, "imconnector.register", self.spec.register_params())
        outcome = as_dict(reply.result)
        if outcome.get("result") is not True:
            code = str(outcome.get("error") or "REGISTRATION_FAILED")
            text = str(outcome.get("error_description") or "imconnector.register failed")
            raise PermanentError(text, code=code)

    async def bind_events(self, member_id: str) -> None:
        reply = await self.rest.call(member_id, "event.get")
        bound: set[tuple[str, str]] = set()
        stale: list[tuple[str, str]] = []
        for raw in as_items(reply.result):
            entry = as_dict(raw)
            event = str(entry.get("event") or "").upper()
            handler = str(entry.get("handler") or "")
            if event not in CONNECTOR_EVENTS or not handler:
                continue
            if handler == self.spec.events_url:
                bound.add((event, handler))
            elif _ours(handler, self.spec.events_url):
                stale.append((event, handler))
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for index, (event, handler) in enumerate(stale):
            commands[f"u{index}"] = ("event.unbind", {"event": event, "handler": handler})
        for index, event in enumerate(CONNECTOR_EVENTS):
            if (event, self.spec.events_url) not in bound:
                commands[f"b{index}"] = (
                    "event.bind",
                    {"event": event, "handler": self.spec.events_url},
                )
        if not commands:
            return
        result = await self.rest.batch(member_id, commands)
        for key, error in result.errors.items():
            if "already binded" in error.text.lower():
                continue
            raise PermanentError(f"{commands[key][0]} failed: {error}", code=error.code)

    async def activate(
        self, member_id: str, line: int, channel: str, token: str | None = None
    ) -> None:
        """Turn the connector on for `line` and describe the channel linked to it.

        With `token` (a settings page user's AUTH_ID) Bitrix24 checks that user's rights.
        """
        params = {"CONNECTOR": self.spec.connector_id, "LINE": line, "ACTIVE": 1}
        await self.rest.call(member_id, "imconnector.activate", params, token=token)
        data = self.data_params(line, channel)
        await self.rest.call(member_id, "imconnector.connector.data.set", data, token=token)

    def data_params(self, line: int, channel: str) -> dict[str, Any]:
        # The source merges with the old data and skips empty values: send all four.
        return {
            "CONNECTOR": self.spec.connector_id,
            "LINE": line,
            "DATA": {
                "ID": f"{self.spec.connector_id}_{channel}",
                "URL": self.spec.placement_url,
                "URL_IM": self.spec.placement_url,
                "NAME": f"WhatsApp ({channel})",
            },
        }

    async def deactivate(self, member_id: str, line: int, token: str | None = None) -> None:
        params = {"CONNECTOR": self.spec.connector_id, "LINE": line, "ACTIVE": 0}
        await self.rest.call(member_id, "imconnector.activate", params, token=token)


def _ours(handler: str, events_url: str) -> bool:
    """A handler an earlier setup of this instance bound (another public_url, a slash)."""
    tail = "/" + events_url.split("/webhooks/", 1)[-1].rstrip("/")
    return handler.rstrip("/").endswith(tail) and "/webhooks/" in handler
