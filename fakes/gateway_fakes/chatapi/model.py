"""State of the fake Chat API instance, in plain dataclasses, and its payload shapes.

Shapes follow /work/shared/reference/whatsapp-providers.md section 1; fields marked [U]
there are guesses the plugin should treat as optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

ACCOUNT_STATUSES = ("init", "loading", "got qr code", "authenticated", "not_paid")
# Names from the other providers, so shared test helpers can say "authorized" everywhere.
STATE_ALIASES = {"authorized": "authenticated", "notAuthorized": "got qr code"}
SUBSTATUSES = (
    "loading",
    "normal",
    "offline",
    "expired",
    "opening",
    "pairing",
    "timeout",
    "computer",
    "phone",
    "battery_low_1",
    "battery_low_2",
)
ACK_STATUSES = ("sent", "delivered", "viewed")

InboundKind = Literal[
    "text",
    "image",
    "video",
    "audio",
    "ptt",
    "document",
    "sticker",
    "location",
    "vcard",
    "multi_vcard",
    "call_log",
]
# customer_writes(kind=...) -> the `type` Chat API puts in the webhook item.
KIND_TYPES: dict[str, str] = {
    "text": "chat",
    "image": "image",
    "video": "video",
    "audio": "audio",
    "ptt": "ptt",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "vcard": "vcard",
    "multi_vcard": "multi_vcard",
    "call_log": "call_log",
}
MEDIA_TYPES = ("image", "video", "audio", "ptt", "document", "sticker")


def _coerce(value: Any, like: Any) -> Any:
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "on", "yes"):
            return True
        if text in ("0", "false", "off", "no", ""):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(like, int):
        return int(value)
    return "" if value is None else str(value)


@dataclass
class ChatApiSettings:
    """`GET/POST /settings` fields (spec 1.4); defaults are off until the gateway asks."""

    webhookUrl: str = ""
    ackNotificationsOn: bool = False
    chatUpdateOn: bool = False
    videoUploadOn: bool = False
    statusNotificationsOn: bool = False
    guaranteedHooks: bool = False
    ignoreOldMessages: bool = False
    oldMessagesPeriod: int = 0
    processArchive: bool = False
    disableDialogsArchive: bool = False
    instanceStatuses: bool = False
    webhookStatuses: bool = False
    parallelHooks: bool = False
    sendDelay: int = 0
    proxy: str = ""

    def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Apply known fields, return only those that changed (the POST's `update`)."""
        changed: dict[str, Any] = {}
        for f in fields(self):
            if f.name not in params:
                continue
            current = getattr(self, f.name)
            try:
                value = _coerce(params[f.name], current)
            except ValueError as exc:
                raise ValueError(f"{f.name}: {exc}") from None
            if value != current:
                setattr(self, f.name, value)
                changed[f.name] = value
        return changed

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class StoredMessage:
    """One message in the instance history, as `/messages` and webhooks show it."""

    number: int
    item: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.item["id"])


@dataclass
class ChatApiSent:
    """A message the gateway sent through the API."""

    id: str
    method: str
    chat_id: str
    type: str
    body: str
    params: dict[str, Any]
    queue_number: int
    at: float
    caption: str | None = None
    quoted_msg_id: str | None = None
    message_number: int | None = None
    status: str = "queued"  # queued | sent | delivered | viewed
    acks: list[str] = field(default_factory=list)


@dataclass
class HookBatch:
    """One webhook POST body in the making; a retry resends exactly the same items."""

    kind: str  # "messages" | "ack" | "status"
    items: list[dict[str, Any]]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0

    def body(self, instance_id: str) -> dict[str, Any]:
        if self.kind == "status":
            # [U] shape of instance status notifications; one per POST.
            return {"instanceId": instance_id, **self.items[0]}
        return {"instanceId": instance_id, self.kind: list(self.items)}


def status_data(status: str, substatus: str) -> dict[str, Any]:
    titles = {
        "init": "Instance is in standby",
        "loading": "Loading, try again in a minute",
        "got qr code": "Scan the QR code",
        "authenticated": "Authenticated",
        "not_paid": "Instance is not paid",
    }
    actions: dict[str, Any] = {}
    if status == "got qr code":
        actions["expiry"] = {"act": "expiry", "label": "Get new QR code"}
    elif status == "authenticated" and substatus != "normal":
        actions["retry"] = {"act": "retry", "label": "Retry now"}
        actions["logout"] = {"act": "logout", "label": "Logout"}
        if substatus == "computer":
            actions["takeover"] = {"act": "takeover", "label": "Use here"}
    return {
        "substatus": substatus,
        "title": titles.get(status, status),
        "msg": "",
        "submsg": "",
        "actions": actions,
    }


def message_item(
    *,
    id: str,
    body: str,
    type: str,
    from_me: bool,
    author: str,
    time: int,
    chat_id: str,
    number: int,
    sender_name: str,
    chat_name: str,
    caption: str | None = None,
    quoted: StoredMessage | None = None,
    quoted_id: str | None = None,
    forwarded: bool = False,
) -> dict[str, Any]:
    """A `messages[]` item exactly as section 1.5 shows it."""
    return {
        "id": id,
        "body": body,
        "fromMe": from_me,
        "self": 1 if from_me else 0,
        "isForwarded": 1 if forwarded else 0,
        "author": author,
        "time": time,
        "chatId": chat_id,
        "messageNumber": number,
        "type": type,
        "senderName": sender_name,
        "caption": caption,
        "quotedMsgBody": quoted.item.get("body") if quoted else None,
        "quotedMsgId": quoted.id if quoted else quoted_id,
        "quotedMsgType": quoted.item.get("type") if quoted else None,
        "chatName": chat_name,
    }


def vcard(name: str, phone: str) -> str:
    return (
        f"BEGIN:VCARD\nVERSION:3.0\nN:;{name};;;\nFN:{name}\n"
        f"TEL;type=CELL;waid={phone}:+{phone}\nEND:VCARD"
    )
