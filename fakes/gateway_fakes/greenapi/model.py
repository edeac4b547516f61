"""State of the fake GREEN-API instance, in plain dataclasses (spec section 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

STATES = ("notAuthorized", "authorized", "blocked", "sleepMode", "starting", "yellowCard")
# Chat API names, so shared test helpers can say either.
STATE_ALIASES = {"authenticated": "authorized", "got qr code": "notAuthorized"}
STATUSES = ("sent", "delivered", "read", "failed", "noAccount", "notInGroup", "yellowCard")
# Spec 2.3: these reach the gateway even with outgoingWebhook = "no".
UNSTOPPABLE_STATUSES = ("noAccount", "failed")

# typeWebhook -> the setting that must be "yes" for the notification to exist at all.
WEBHOOK_SETTING = {
    "incomingMessageReceived": "incomingWebhook",
    "outgoingMessageReceived": "outgoingMessageWebhook",
    "outgoingAPIMessageReceived": "outgoingAPIMessageWebhook",
    "outgoingMessageStatus": "outgoingWebhook",
    "stateInstanceChanged": "stateWebhook",
    "incomingCall": "incomingCallWebhook",
    "incomingBlock": "incomingBlockWebhook",
}
# typeMessage -> an extra setting needed on top of the one for its typeWebhook.
MESSAGE_SETTING = {
    "pollMessage": "pollMessageWebhook",
    "pollUpdateMessage": "pollMessageWebhook",
    "editedMessage": "editedMessageWebhook",
    "deletedMessage": "deletedMessageWebhook",
}


@dataclass
class GreenSettings:
    """`getSettings` / `setSettings` fields; flags are the strings "yes"/"no" (spec 2.3).

    Real instances start with every notification off; tests that skip `setSettings`
    pass `settings=ALL_NOTIFICATIONS_ON` to the fake.
    """

    wid: str = ""
    countryInstance: str = ""
    typeAccount: str = ""
    webhookUrl: str = ""
    webhookUrlToken: str = ""
    delaySendMessagesMilliseconds: int = 500
    markIncomingMessagesReaded: str = "no"
    markIncomingMessagesReadedOnReply: str = "no"
    sharedSession: str = "no"
    outgoingWebhook: str = "no"
    outgoingMessageWebhook: str = "no"
    outgoingAPIMessageWebhook: str = "no"
    incomingWebhook: str = "no"
    deviceWebhook: str = "no"
    statusInstanceWebhook: str = "no"
    stateWebhook: str = "no"
    enableMessagesHistory: str = "no"
    keepOnlineStatus: str = "no"
    pollMessageWebhook: str = "no"
    incomingBlockWebhook: str = "no"
    incomingCallWebhook: str = "no"
    editedMessageWebhook: str = "no"
    deletedMessageWebhook: str = "no"

    READ_ONLY = ("wid", "countryInstance", "typeAccount")
    FREE_TEXT = ("webhookUrl", "webhookUrlToken")

    def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and apply; raises ValueError naming the first bad field."""
        changed: dict[str, Any] = {}
        for f in fields(self):
            if f.name not in params or f.name in self.READ_ONLY:
                continue
            value = params[f.name]
            if f.name == "delaySendMessagesMilliseconds":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{f.name} must be an integer")
                if not 500 <= value <= 600_000:
                    raise ValueError(f"{f.name} must be between 500 and 600000")
            elif f.name in self.FREE_TEXT:
                if not isinstance(value, str):
                    raise ValueError(f"{f.name} must be a string")
            elif value not in ("yes", "no"):
                raise ValueError(f"{f.name} must be 'yes' or 'no'")
            if getattr(self, f.name) != value:
                setattr(self, f.name, value)
                changed[f.name] = value
        return changed

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def on(self, name: str) -> bool:
        return getattr(self, name, "no") == "yes"


ALL_NOTIFICATIONS_ON: dict[str, str] = {
    name: "yes"
    for name in (
        "outgoingWebhook",
        "outgoingMessageWebhook",
        "outgoingAPIMessageWebhook",
        "incomingWebhook",
        "stateWebhook",
        "pollMessageWebhook",
        "incomingBlockWebhook",
        "incomingCallWebhook",
        "editedMessageWebhook",
        "deletedMessageWebhook",
    )
}


@dataclass
class Notification:
    """One entry of the instance's FIFO notification queue (webhooks and polling share it)."""

    receipt_id: int
    body: dict[str, Any]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0

    @property
    def type_webhook(self) -> str:
        return str(self.body.get("typeWebhook"))


@dataclass
class GreenSent:
    """A message the gateway sent through the API."""

    id_message: str
    method: str
    chat_id: str
    type_message: str
    message_data: dict[str, Any]
    params: dict[str, Any]
    at: float
    quoted_message_id: str | None = None
    url_file: str | None = None
    status: str = "queued"  # queued | sent | delivered | read | failed | noAccount | ...
    statuses: list[str] = field(default_factory=list)
    send_at: float = 0.0
    #: When it left the send queue (None while queued).
    sent_at: float | None = None
    #: Texts it was edited to (`editMessage`), and whether it was deleted (`deleteMessage`).
    edits: list[str] = field(default_factory=list)
    deleted: bool = False

    @property
    def text(self) -> str | None:
        data = self.message_data
        for key, inner in (("textMessageData", "textMessage"), ("extendedTextMessageData", "text")):
            if key in data:
                return str(data[key][inner])
        return None
