"""The settings of one Cloud API instance, checked once and held typed.

Values may arrive as strings (environment variables, `.secrets.toml` written by hand), so
numbers and booleans are parsed here rather than trusted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REQUIRED: dict[str, str] = {
    "phone_number_id": "the phone number id from WhatsApp Manager / App Dashboard (digits)",
    "access_token": "a permanent system-user access token with whatsapp_business_messaging",
    "app_secret": "the app secret (App Dashboard -> App settings -> Basic), signs webhooks",
    "verify_token": "any random string; paste the same into the webhook setup in App Dashboard",
}
OPTIONAL: dict[str, Any] = {
    "api_base": "https://graph.facebook.com",
    "api_version": "v21.0",
    "messages_per_second": 80,
    "pair_interval": 6.0,
    "max_hold_seconds": 3.0,
    "template_name": None,
    "template_language": "en_US",
    "template_text_parameter": True,
    "upload_media": False,
    "waba_id": None,
    "template_sync_minutes": 60,
    # An operator's reply marks the customer's last message read (blue ticks).
    "read_on_reply": True,
    # Seconds a send whose answer was lost waits for a status echoing its tag before it is
    # sent again (only while the number's webhooks demonstrably arrive): see landed.py.
    # 0 turns this off: such a send is parked for a person, as before.
    "confirm_window": 600,
}
SECRETS = frozenset({"access_token", "app_secret", "verify_token"})

_VERSION = re.compile(r"v\d+\.\d+\Z")
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?\Z")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}

Problem = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class CloudApiConfig:
    phone_number_id: str
    access_token: str
    app_secret: str
    verify_token: str
    api_base: str
    api_version: str
    messages_per_second: float
    pair_interval: float
    max_hold_seconds: float
    template_name: str | None
    template_language: str
    template_text_parameter: bool
    upload_media: bool
    #: The WhatsApp Business Account whose approved templates the CRM may name.
    waba_id: str | None = None
    template_sync_minutes: float = 60.0
    read_on_reply: bool = True
    confirm_window: float = 600.0

    @property
    def graph_url(self) -> str:
        return f"{self.api_base.rstrip('/')}/{self.api_version}"


def parse_config(raw: Mapping[str, Any]) -> tuple[CloudApiConfig | None, list[Problem]]:
    """The typed settings, or None and every problem found as (key, what, fix)."""
    values = {**OPTIONAL, **raw}
    problems: list[Problem] = []
    for key, help_text in REQUIRED.items():
        if values.get(key) in (None, ""):
            problems.append((key, "is missing", f"set it: {help_text}"))
    pnid = str(values.get("phone_number_id") or "")
    if pnid and not pnid.isdigit():
        problems.append(
            ("phone_number_id", "must be digits only", "copy the numeric id, not the phone number")
        )
    api_base = str(values["api_base"])
    parts = urlsplit(api_base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(("api_base", "is not an http(s) URL", "use https://graph.facebook.com"))
    version = str(values["api_version"])
    if not _VERSION.match(version):
        problems.append(("api_version", f"{version!r} is not a Graph version", "use e.g. v21.0"))
    mps = _number(values, "messages_per_second", problems, minimum=0.001)
    pair = _number(values, "pair_interval", problems, minimum=0.0)
    hold = _number(values, "max_hold_seconds", problems, minimum=0.0)
    template = values.get("template_name")
    template_name = str(template).strip() if template not in (None, "") else None
    language = str(values["template_language"])
    if not _LANGUAGE.match(language):
        problems.append(
            ("template_language", f"{language!r} is not a language code", "use e.g. en_US or ru")
        )
    text_param = _flag(values, "template_text_parameter", problems)
    upload = _flag(values, "upload_media", problems)
    read_on_reply = _flag(values, "read_on_reply", problems)
    waba = str(values.get("waba_id") or "").strip()
    if waba and not waba.isdigit():
        problems.append(
            ("waba_id", "must be digits only", "copy the WhatsApp Business Account id (digits)")
        )
    sync_minutes = _number(values, "template_sync_minutes", problems, minimum=1.0)
    window = _number(values, "confirm_window", problems, minimum=0.0)
    if problems:
        return None, problems
    config = CloudApiConfig(
        phone_number_id=pnid,
        access_token=str(values["access_token"]),
        app_secret=str(values["app_secret"]),
        verify_token=str(values["verify_token"]),
        api_base=api_base.rstrip("/"),
        api_version=version,
        messages_per_second=mps,
        pair_interval=pair,
        max_hold_seconds=hold,
        template_name=template_name,
        template_language=language,
        template_text_parameter=text_param,
        upload_media=upload,
        waba_id=waba or None,
        template_sync_minutes=sync_minutes,
        read_on_reply=read_on_reply,
        confirm_window=window,
    )
    return config, []


def _number(
    values: Mapping[str, Any], key: str, problems: list[Problem], *, minimum: float
) -> float:
    value = values[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        problems.append(
            (key, f"{value!r} is not a number", f"set a number, default {OPTIONAL[key]}")
        )
        return float(OPTIONAL[key])
    if number < minimum or number != number:  # NaN compares unequal to itself
        problems.append((key, f"must be at least {minimum:g}", f"default is {OPTIONAL[key]}"))
    return number


def _flag(values: Mapping[str, Any], key: str, problems: list[Problem]) -> bool:
    value = values[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        problems.append((key, f"{value!r} is not true or false", "set true or false"))
    return False
