"""Install, placement and uninstall as Bitrix performs them against the app."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx

from . import events
from .oauth import TokenPair
from .state import EventDelivery

if TYPE_CHECKING:
    from .portal import FakePortal


def frame_form(
    portal: FakePortal, pair: TokenPair, placement: str, options: dict[str, Any]
) -> dict[str, str]:
    """The POST body Bitrix sends when it opens an app page in an iframe."""
    return {
        "AUTH_ID": pair.access_token,
        "AUTH_EXPIRES": str(pair.expires_in),
        "REFRESH_ID": pair.refresh_token,
        "SERVER_ENDPOINT": portal.server_endpoint,
        "APPLICATION_TOKEN": portal.application_token,
        "APPLICATION_SCOPE": portal.scope,
        "member_id": portal.member_id,
        "status": portal.app_record.status,
        "PLACEMENT": placement,
        "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False),
    }


def frame_request(
    portal: FakePortal, url: str, placement: str, options: dict[str, Any], user_id: int
) -> tuple[str, dict[str, str]]:
    """The URL (with Bitrix's query) and the form Bitrix POSTs into an app page's iframe."""
    portal.app_sids += 1
    query = {
        "DOMAIN": portal.domain,
        "PROTOCOL": "1" if portal.scheme == "https" else "0",
        "LANG": portal.app_record.language_id,
        # APP_SID is a per-render session id, not the application token.
        "APP_SID": f"{portal.app_sids:032x}",
    }
    form = frame_form(portal, portal.tokens.issue(user_id), placement, options)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urlencode(query)}", form


async def open_frame(
    portal: FakePortal, url: str, placement: str, options: dict[str, Any], user_id: int
) -> httpx.Response:
    target, form = frame_request(portal, url, placement, options, user_id)
    return await portal.client().post(
        target,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def connector_options(portal: FakePortal, connector: str, line: int) -> dict[str, Any]:
    """SETTING_CONNECTOR options from the current status row (JSON booleans)."""
    row = portal.state.statuses.get((connector, line))
    return {
        "CONNECTOR": connector,
        "LINE": str(line),
        "STATUS": bool(row and row.ok),
        "ACTIVE_STATUS": bool(row and row.active),
        "CONNECTION_STATUS": bool(row and row.connection),
        "REGISTER_STATUS": bool(row and row.register),
        "ERROR_STATUS": bool(row and row.error),
        "URI": f"/contact_center/connector/?ID={connector}&LINE={line}",
    }


async def install(portal: FakePortal, url: str, *, ui: bool, user_id: int) -> httpx.Response:
    portal.installed = True
    portal.installed_finished = not ui
    if ui:
        return await open_frame(portal, url, "DEFAULT", {}, user_id)
    pair = portal.tokens.issue(user_id)
    auth = portal.event_auth(user_id, pair=pair, with_refresh=True)
    data = {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"}
    form = events.event_form(events.APP_INSTALL, None, data, int(portal.now()), auth)
    response = await portal.client().post(
        url,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    portal.deliveries.append(EventDelivery(events.APP_INSTALL, url, form, response=response))
    return response


async def uninstall(portal: FakePortal, *, clean: bool) -> list[EventDelivery]:
    data = {"LANGUAGE_ID": "en", "CLEAN": 1 if clean else 0}
    delivered = await portal.emit(events.APP_UNINSTALL, data, tokens=False)
    # Bitrix drops the app's connectors, line statuses, handlers and tokens.
    state = portal.state
    state.connectors.clear()
    state.statuses.clear()
    state.bindings.clear()
    state.placements.clear()
    # ...and its SMS senders and robots (a workflow using a robot keeps it, blocked).
    portal.crm.senders.clear()
    portal.crm.robots.clear()
    portal.tokens.revoke_all()
    portal.installed = portal.installed_finished = False
    return delivered
