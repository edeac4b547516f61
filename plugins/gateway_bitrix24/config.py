"""The Bitrix24 instance's settings: defaults and their checks (`gateway check`, start-up)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .oauth import https_or_loopback

_CONNECTOR_ID = re.compile(r"[a-z0-9_]{1,40}\Z")

OPTIONAL_SETTINGS: Mapping[str, Any] = {
    "connector_id": "whatschat",
    "connector_name": "WhatsApp (WhatsChat)",
    "oauth_url": "",
    "rate": 2.0,
    "burst": 50,
    "max_wait": 1.0,
    "strip_operator_name": False,
    "need_signature": True,
    "idle_refresh_days": 7,
    # Messages per delivery round: 10 commands of 10 in one `batch`. More would make
    # requests that risk the 60 s limit and the `operating` budget (docs/bitrix24.md).
    "max_batch": 100,
    # Seconds after a send of unknown outcome began before the chat is read to see whether
    # it landed: a request may run at the portal for up to 60 s (files are downloaded
    # while it answers), and one still running could land after a "not there".
    "reconcile_after": 75.0,
    "messages_per_command": 10,
    "allowed_portals": [],
}


def settings_problems(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What is wrong with an instance's settings: (key, problem, fix) each."""
    problems: list[tuple[str, str, str]] = []
    connector = config.get("connector_id", "whatschat")
    if not isinstance(connector, str) or not _CONNECTOR_ID.match(connector):
        problems.append(
            ("connector_id", "must be 1-40 of a-z, 0-9 and _", 'e.g. connector_id = "acme_wa"')
        )
    numbers = (
        ("rate", 0.1),
        ("burst", 1),
        ("max_batch", 1),
        ("idle_refresh_days", 1),
        ("reconcile_after", 0),
    )
    for key, low in numbers:
        value = config.get(key, OPTIONAL_SETTINGS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            problems.append(
                (key, f"must be a number ≥ {low}", f"set {key} = {OPTIONAL_SETTINGS[key]}")
            )
    per_command = config.get("messages_per_command", OPTIONAL_SETTINGS["messages_per_command"])
    if isinstance(per_command, bool) or not isinstance(per_command, int) or per_command < 1:
        problems.append(
            (
                "messages_per_command",
                f"must be a whole number ≥ 1, got {per_command!r}",
                "set messages_per_command = 10 (items per imconnector.send.messages call)",
            )
        )
    url = config.get("oauth_url") or ""
    if not isinstance(url, str) or (url and not https_or_loopback(url)):
        problems.append(
            (
                "oauth_url",
                "must be an https URL (plain http only to this machine: a fake portal)",
                "leave it out to use Bitrix24's",
            )
        )
    portals = config.get("allowed_portals", [])
    if not isinstance(portals, list) or not all(isinstance(p, str) for p in portals):
        problems.append(
            (
                "allowed_portals",
                "must be a list of member_ids or domains",
                'e.g. ["acme.bitrix24.com"]',
            )
        )
    return problems
