"""The settings of one Chat API instance, checked once and held typed.

Values may arrive as strings (environment variables, a hand-written `.secrets.toml`), so
booleans and numbers are parsed here rather than trusted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REQUIRED: dict[str, str] = {
    "base_url": "the instance URL without the method, e.g. https://api.chat-api.com/instance1101",
    "token": "the instance token from the Chat API dashboard",
    "webhook_secret": "a random string of 16+ URL-safe characters (e.g. `openssl rand -hex 16`)",
}
OPTIONAL: dict[str, Any] = {
    # Point the instance's webhook at the gateway on start (POST /settings).
    "set_webhook": True,
    # Group chats (@g.us) are ignored unless enabled.
    "groups": False,
    # Messages typed on the phone itself go to the CRM as notes.
    "mirror_phone_messages": False,
    # An operator's reply marks the customer's chat read (/readChat): blue ticks.
    "read_on_reply": True,
    # Chat API queues sends itself; this only keeps bursts from earning HTTP 429. 0 = no limit.
    "messages_per_second": 5.0,
    # Fetch from /messages what arrived while the gateway was down.
    "refill_on_start": True,
    # Copy inbound files into the gateway's media store instead of passing the provider's URL.
    "rehost_media": False,
    # The instance number in dedupe keys; by default taken from base_url (`instance1101`).
    "instance_id": None,
}
SECRETS = frozenset({"token", "webhook_secret"})
FLAGS = (
    "set_webhook",
    "groups",
    "mirror_phone_messages",
    "refill_on_start",
    "rehost_media",
    "read_on_reply",
)

MIN_SECRET_LENGTH = 16
_SECRET = re.compile(r"[A-Za-z0-9._~-]+\Z")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

Problem = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ChatApiConfig:
    base_url: str
    token: str
    webhook_secret: str
    instance_id: str
    set_webhook: bool
    groups: bool
    mirror_phone_messages: bool
    messages_per_second: float
    refill_on_start: bool
    rehost_media: bool
    read_on_reply: bool = True


def parse_config(
    raw: Mapping[str, Any], fallback_id: str = ""
) -> tuple[ChatApiConfig | None, list[Problem]]:
    """The typed settings, or None and every problem found as (key, what is wrong, fix)."""
    values = {**OPTIONAL, **raw}
    problems: list[Problem] = []
    for key, help_text in REQUIRED.items():
        if values.get(key) in (None, ""):
            problems.append((key, "is missing", f"set it: {help_text}"))

    base_url = str(values.get("base_url") or "").strip().rstrip("/")
    if base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(("base_url", "is not an http(s) URL", REQUIRED["base_url"]))
        elif parts.query or parts.fragment:
            fix = "give the token in `token`, not in the URL"
            problems.append(("base_url", "must not have a query string", fix))

    secret = str(values.get("webhook_secret") or "")
    if secret and len(secret) < MIN_SECRET_LENGTH:
        short = f"is shorter than {MIN_SECRET_LENGTH} characters"
        problems.append(("webhook_secret", short, REQUIRED["webhook_secret"]))
    elif secret and not _SECRET.match(secret):
        fix = "use letters, digits and - _ . ~ only: it is part of the webhook URL"
        problems.append(("webhook_secret", "has characters a URL path cannot hold", fix))

    flags: dict[str, bool] = {}
    for key in FLAGS:
        flag = _boolean(values.get(key))
        if flag is None:
            wrong = f"is not true or false: {values.get(key)!r}"
            problems.append((key, wrong, "write true or false"))
        flags[key] = bool(flag)

    rate = _number(values.get("messages_per_second"))
    if rate is None or rate < 0:
        fix = "a number of messages per second; 0 turns pacing off"
        problems.append(("messages_per_second", "is not a number >= 0", fix))

    instance_id = str(values.get("instance_id") or "")
    instance_id = instance_id or _instance_from_url(base_url) or fallback_id
    if problems:
        return None, problems
    return (
        ChatApiConfig(
            base_url=base_url,
            token=str(values["token"]),
            webhook_secret=secret,
            instance_id=instance_id,
            messages_per_second=float(rate or 0.0),
            **flags,
        ),
        [],
    )


def _instance_from_url(base_url: str) -> str:
    """`https://eu21.chat-api.com/instance1101` -> "1101"; the last path segment otherwise."""
    last = urlsplit(base_url).path.rstrip("/").rsplit("/", 1)[-1]
    return last.removeprefix("instance") or last


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
