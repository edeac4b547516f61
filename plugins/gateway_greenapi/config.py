"""One GREEN-API instance's settings, read once and checked (spec section 2).

```toml
[channels.wa]
provider = "greenapi"
api_url = "https://7105.api.greenapi.com"   # apiUrl from the console
id_instance = "7105000001"
api_token = "..."               # secret: .secrets.toml or GATEWAY_CHANNELS__WA__API_TOKEN
webhook_token = "..."           # secret; sent to GREEN-API as webhookUrlToken
# set_webhook = true            # on start, setSettings points the instance at
#                               # {public_url}/webhooks/wa (only when something differs:
#                               # setSettings reboots the instance)
# receive = "webhook"           # or "polling": receiveNotification/deleteNotification
# groups = false                # take and send group chats
# mirror_phone_messages = false # show messages typed on the phone to operators, as notes
# read_on_reply = true          # an operator's reply marks the customer's messages read
#                               # (readChat): the customer sees blue ticks
# avatars = true                # customers' profile photos for the CRM (getAvatar, once a
#                               # day per chat)
# messages_per_second = 0       # pace sends (0: leave it to GREEN's own send queue)
# state_poll_seconds = 60       # poll getStateInstance (0: only the webhook)
# receive_timeout = 20          # polling: seconds GREEN holds receiveNotification (5-60)
# poll_idle_seconds = 1         # polling: pause after an empty answer
# refill_on_start = true        # after downtime, fetch what was missed from the journals
#                               # (lastIncomingMessages; lastOutgoingMessages too when
#                               # mirror_phone_messages): GREEN keeps notifications 24 h only
# refill_max_hours = 72         # the longest gap refilled
# api_prefix = ""               # "v3" for the newer URL form
# media_url = ""                # the console's mediaUrl; unused while files go by URL
```

Values may arrive as TOML types or as strings from `GATEWAY_*` variables, so numbers and
flags are read leniently ("yes", "true", "1") and every problem names its key and a fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Problem = tuple[str, str, str]
Receive = Literal["webhook", "polling"]

REQUIRED: dict[str, str] = {
    "api_url": "the instance's apiUrl from the GREEN-API console, e.g. https://7105.api.greenapi.com",
    "id_instance": "the instance's idInstance, e.g. 7105000001",
    "api_token": "the instance's apiTokenInstance",
}
OPTIONAL: dict[str, Any] = {
    "webhook_token": "",
    "media_url": "",
    "api_prefix": "",
    "set_webhook": True,
    "receive": "webhook",
    "groups": False,
    "mirror_phone_messages": False,
    "read_on_reply": True,
    "avatars": True,
    "messages_per_second": 0.0,
    "state_poll_seconds": 60.0,
    "receive_timeout": 20,
    "poll_idle_seconds": 1.0,
    "refill_on_start": True,
    "refill_max_hours": 72.0,
}
SECRETS = frozenset({"api_token", "webhook_token"})

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


class _Problems:
    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, key: str, message: str, fix: str) -> None:
        self.found.append((key, message, fix))


@dataclass(frozen=True, slots=True)
class GreenConfig:
    """The settings the plugin works with; `from_mapping` fills defaults and checks them."""

    api_url: str
    id_instance: str
    api_token: str
    webhook_token: str = ""
    media_url: str = ""
    api_prefix: str = ""
    set_webhook: bool = True
    receive: Receive = "webhook"
    groups: bool = False
    mirror_phone_messages: bool = False
    read_on_reply: bool = True
    avatars: bool = True
    messages_per_second: float = 0.0
    state_poll_seconds: float = 60.0
    receive_timeout: int = 20
    poll_idle_seconds: float = 1.0
    refill_on_start: bool = True
    refill_max_hours: float = 72.0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> GreenConfig:
        """The config, or ValueError listing every problem (see `problems`)."""
        config, problems = _read(raw)
        if problems or config is None:
            raise ValueError("; ".join(f"{k}: {m} ({f})" for k, m, f in problems))
        return config

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_token, self.webhook_token) if s)


def problems(raw: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with one instance's settings, as (key, what, fix)."""
    return _read(raw)[1]


def _read(raw: Mapping[str, Any]) -> tuple[GreenConfig | None, list[Problem]]:
    values = {**OPTIONAL, **raw}
    out = _Problems()
    for key, help_text in REQUIRED.items():
        if values.get(key) in (None, ""):
            out.add(key, "is missing", f"set it: {help_text}")
    if out.found:
        return None, out.found

    api_url = _url(values, "api_url", out)
    media_url = _url(values, "media_url", out) if values["media_url"] else ""
    id_instance = str(values["id_instance"]).strip()
    if not id_instance.isdigit():
        out.add("id_instance", f"is {id_instance!r}, not a number", "copy idInstance (digits only)")
    prefix = str(values["api_prefix"] or "").strip().strip("/")
    receive = str(values["receive"]).strip().lower()
    if receive not in ("webhook", "polling"):
        out.add("receive", f"is {receive!r}", 'use "webhook" or "polling"')
    webhook_token = str(values["webhook_token"] or "")
    if receive == "webhook" and not webhook_token:
        out.add(
            "webhook_token",
            "is missing (webhooks must prove they come from GREEN-API)",
            "set a long random value; the gateway sends it to GREEN-API as webhookUrlToken",
        )
    rate = _number(values, "messages_per_second", out, minimum=0.0)
    poll = _number(values, "state_poll_seconds", out, minimum=0.0)
    idle = _number(values, "poll_idle_seconds", out, minimum=0.0)
    timeout = _number(values, "receive_timeout", out, minimum=5.0, maximum=60.0)
    refill_hours = _number(values, "refill_max_hours", out, minimum=0.0)
    names = ("set_webhook", "groups", "mirror_phone_messages", "read_on_reply", "avatars")
    flags = {key: _flag(values, key, out) for key in (*names, "refill_on_start")}
    if out.found:
        return None, out.found
    config = GreenConfig(
        api_url=api_url,
        id_instance=id_instance,
        api_token=str(values["api_token"]),
        webhook_token=webhook_token,
        media_url=media_url,
        api_prefix=f"/{prefix}" if prefix else "",
        receive="polling" if receive == "polling" else "webhook",
        messages_per_second=rate,
        state_poll_seconds=poll,
        receive_timeout=int(timeout),
        poll_idle_seconds=idle,
        refill_max_hours=refill_hours,
        **flags,
    )
    return config, []


def _url(values: Mapping[str, Any], key: str, out: _Problems) -> str:
    url = str(values[key]).strip().rstrip("/")
    if not url.startswith(("https://", "http://")):
        out.add(key, f"is {url!r}, not an http(s) URL", "copy it from the GREEN-API console")
    return url


def _number(
    values: Mapping[str, Any],
    key: str,
    out: _Problems,
    *,
    minimum: float,
    maximum: float | None = None,
) -> float:
    value = values[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        out.add(key, f"is {value!r}, not a number", f"use a number (default {OPTIONAL[key]})")
        return float(OPTIONAL[key])
    top = "" if maximum is None else f" and at most {maximum:g}"
    if number < minimum or (maximum is not None and number > maximum):
        out.add(key, f"is {number:g}", f"use a number at least {minimum:g}{top}")
    return number


def _flag(values: Mapping[str, Any], key: str, out: _Problems) -> bool:
    value = values[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        out.add(key, f"is {value!r}, not true or false", "use true or false")
    return False
