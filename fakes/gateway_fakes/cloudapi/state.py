"""Plain dataclasses holding everything the fake knows, and the phone-number state machine."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = Any

PhoneStatus = Literal["PENDING", "CONNECTED", "FLAGGED", "RESTRICTED", "BANNED", "DISCONNECTED"]

MESSAGING_TIERS = ("TIER_250", "TIER_1K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED")


@dataclass(slots=True)
class Call:
    """One HTTP request the gateway made to the fake, with what it got back."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: JSON
    at: float
    status: int | None = None  # None: the fake answered with a (simulated) timeout
    response: JSON = None


@dataclass(slots=True)
class SentMessage:
    """A message the fake accepted from the gateway (it returned a wamid for it)."""

    id: str
    to: str
    wa_id: str
    type: str
    request: dict[str, JSON]
    at: float
    status: str = "accepted"
    errors: list[dict[str, JSON]] = field(default_factory=list)
    # Pricing category echoed in statuses: "service" for free-form, the template's otherwise.
    category: str = "service"

    @property
    def text(self) -> str | None:
        """The text body, or the caption of a media message."""
        if self.type == "text":
            return str(self.request.get("text", {}).get("body", ""))
        obj = self.request.get(self.type)
        if isinstance(obj, dict) and "caption" in obj:
            return str(obj["caption"])
        return None

    @property
    def context_id(self) -> str | None:
        context = self.request.get("context")
        return str(context["message_id"]) if isinstance(context, dict) else None


@dataclass(slots=True)
class InboundMessage:
    """A message a customer wrote (queued as a webhook)."""

    id: str
    wa_id: str
    type: str
    message: dict[str, JSON]
    contact: dict[str, JSON]
    at: float


@dataclass(slots=True)
class Media:
    id: str
    content: bytes
    mime_type: str
    sha256: str
    filename: str | None
    origin: Literal["upload", "inbound"]
    created_at: float
    expires_at: float
    deleted: bool = False

    @property
    def file_size(self) -> int:
        return len(self.content)


@dataclass(slots=True)
class ReadReceipt:
    message_id: str
    typing_indicator: dict[str, JSON] | None
    at: float


@dataclass(slots=True)
class Template:
    name: str
    language: str
    body_params: int = 0
    category: str = "UTILITY"
    status: Literal["APPROVED", "PAUSED", "DISABLED"] = "APPROVED"


@dataclass(slots=True)
class Fault:
    """A failure injected into the next matching API call (see `FakeCloudApi.fail_next`)."""

    code: int = 131000
    http_status: int | None = None
    timeout: bool = False
    after_accept: bool = True
    html: bool = False
    on: str = "messages"


@dataclass(slots=True)
class Delivery:
    """One webhook POST attempt the fake made to the gateway."""

    url: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    at: float
    status: int | None = None  # None: transport error / timeout
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class PendingRetry:
    body: bytes
    headers: dict[str, str]
    first_at: float
    attempts: int
    next_at: float


@dataclass(slots=True)
class PhoneState:
    """What `GET /{phone_number_id}` reports; changed only through `transition`."""

    status: PhoneStatus = "CONNECTED"
    quality_rating: str = "GREEN"
    name_status: str = "APPROVED"
    code_verification_status: str = "VERIFIED"
    messaging_limit_tier: str = "TIER_1K"
    throughput_level: str = "STANDARD"
    account_mode: str = "LIVE"
    platform_type: str = "CLOUD_API"
    is_official_business_account: bool = False

    @property
    def can_send(self) -> str:
        if self.status in ("BANNED", "DISCONNECTED", "PENDING"):
            return "BLOCKED"
        if self.status in ("RESTRICTED", "FLAGGED"):
            return "LIMITED"
        return "AVAILABLE"


_LIVE: frozenset[PhoneStatus] = frozenset({"CONNECTED", "FLAGGED", "RESTRICTED"})

# event -> (states it may fire from, resulting status or None to keep the status)
TRANSITIONS: dict[str, tuple[frozenset[PhoneStatus], PhoneStatus | None]] = {
    "register": (frozenset({"PENDING", "DISCONNECTED"}), "CONNECTED"),
    "flag": (frozenset({"CONNECTED"}), "FLAGGED"),
    "unflag": (frozenset({"FLAGGED"}), "CONNECTED"),
    "restrict": (frozenset({"CONNECTED", "FLAGGED"}), "RESTRICTED"),
    "lift_restriction": (frozenset({"RESTRICTED"}), "CONNECTED"),
    "ban": (_LIVE, "BANNED"),
    "reinstate": (frozenset({"BANNED"}), "CONNECTED"),
    "disconnect": (_LIVE, "DISCONNECTED"),
    "upgrade": (_LIVE, None),
    "downgrade": (_LIVE, None),
    "upgrade_throughput": (frozenset({"CONNECTED"}), None),
}


def apply_transition(
    phone: PhoneState, event: str, *, display_phone_number: str, now: float
) -> list[tuple[str, dict[str, JSON]]]:
    """Move `phone` through `event`; return the webhook changes `(field, value)` Meta would send.

    Raises ValueError for an unknown event or one not allowed from the current status, so a
    test cannot drive the number into a state Meta would never report.
    """
    if event not in TRANSITIONS:
        raise ValueError(f"unknown phone event {event!r}; known: {sorted(TRANSITIONS)}")
    allowed, target = TRANSITIONS[event]
    if phone.status not in allowed:
        raise ValueError(f"cannot {event} a phone number in status {phone.status}")
    if target is not None:
        phone.status = target
    number = display_phone_number
    tier = phone.messaging_limit_tier
    quality: dict[str, JSON] = {"display_phone_number": number, "current_limit": tier}
    if event == "flag":
        phone.quality_rating = "RED"
        return [("phone_number_quality_update", {**quality, "event": "FLAGGED"})]
    if event == "unflag":
        phone.quality_rating = "GREEN"
        return [("phone_number_quality_update", {**quality, "event": "UNFLAGGED"})]
    if event in ("upgrade", "downgrade"):
        index = MESSAGING_TIERS.index(tier) + (1 if event == "upgrade" else -1)
        index = max(0, min(index, len(MESSAGING_TIERS) - 1))
        phone.messaging_limit_tier = MESSAGING_TIERS[index]
        value = {
            "display_phone_number": number,
            "event": event.upper(),
            "old_limit": tier,
            "current_limit": phone.messaging_limit_tier,
        }
        return [("phone_number_quality_update", value)]
    if event == "upgrade_throughput":
        phone.throughput_level = "HIGH"
        return [("phone_number_quality_update", {**quality, "event": "THROUGHPUT_UPGRADE"})]
    if event == "restrict":
        restriction = {
            "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING",
            "expiration": int(now) + 7 * 86400,
        }
        value = {"phone_number": number, "event": "ACCOUNT_RESTRICTION"}
        return [("account_update", {**value, "restriction_info": [restriction]})]
    if event in ("ban", "reinstate"):
        state = "DISABLE" if event == "ban" else "REINSTATE"
        ban_info = {"waba_ban_state": [state], "waba_ban_date": _date(now)}
        disabled: dict[str, JSON] = {"phone_number": number, "event": "DISABLED_UPDATE"}
        return [("account_update", {**disabled, "ban_info": ban_info})]
    return []


def _date(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%d")
