"""The normalized message model: the only shapes the core reads.

Providers turn their own payloads into these and back; nothing provider-specific crosses the
core except `extra`, an opaque JSON mapping a provider may attach to a message and get back
later (for example the Bitrix24 `im` block it needs to acknowledge delivery).
Every type round-trips through `to_json()` / `event_from_json()` so it can be persisted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal, TypeAlias

#: A value that JSON can carry (what `ProviderState` keeps and `Sent.extra` holds).
JSON: TypeAlias = Any


class DeliveryStatus(enum.IntEnum):
    """Delivery state of one message; higher values win when merging (`merge_status`)."""

    PENDING = 0
    SENT = 1
    FAILED = 2
    DELIVERED = 3
    READ = 4


def merge_status(current: DeliveryStatus | None, new: DeliveryStatus) -> DeliveryStatus | None:
    """The status after `new` arrives, or None when it would be a downgrade (ignore it).

    Statuses arrive out of order (Cloud API sends `read` before `delivered` at times), so a
    status never moves backwards: read is never replaced by delivered, and `failed` only
    replaces pending or sent, since a message the peer received did not fail.
    """
    if current is None or new > current:
        return new
    return None


class AccountStatus(enum.StrEnum):
    """What a channel's account is doing, as far as its provider tells."""

    CONNECTED = "connected"
    STARTING = "starting"
    NEEDS_QR = "needs_qr"
    DISCONNECTED = "disconnected"
    BANNED = "banned"
    UNPAID = "unpaid"
    NEEDS_REINSTALL = "needs_reinstall"
    ERROR = "error"
    UNKNOWN = "unknown"


#: What an `Attachment` is; `Capabilities.media_kinds` names the ones a destination takes.
AttachmentKind = Literal["image", "video", "audio", "voice", "document", "sticker", "file"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file: a URL the destination can fetch.

    `rehost=True` says the URL is the source provider's own: it needs the provider's
    credentials, or expires soon, so the destination cannot be given it. The core then
    downloads it through the guarded fetcher (the URL and headers come from the source
    provider's `media_download`) into the media store just before delivery, and the
    destination gets the media store's public, expiring link instead.
    """

    kind: AttachmentKind
    url: str
    mime_type: str | None = None
    filename: str | None = None
    size: int | None = None
    caption: str | None = None
    rehost: bool = False


@dataclass(frozen=True, slots=True)
class Location:
    """A shared place: coordinates, and the place's name and address when the sender gave them."""

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    """A shared contact card: a name, its phone numbers as written, the vCard when sent."""

    name: str
    phones: tuple[str, ...] = ()
    vcard: str | None = None


@dataclass(frozen=True, slots=True)
class Sender:
    """Who wrote a message: a stable id on its side, and what to show.

    `avatar_url` is the picture the source gave for them (a WhatsApp profile photo): a URL
    named by a provider, so whoever downloads it does so through the guarded fetcher.
    """

    id: str
    name: str | None = None
    phone: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a conversation, normalized.

    `conversation_id` is the chat on the channel side (a WhatsApp chat id); CRM providers use
    the same id for the chat they keep, so a conversation keeps one id across a route.
    `native_id` is the id the source gave it; `quoted_native_id` the source id of the quoted one.
    `from_me`: the business wrote it on its own WhatsApp (typed on the phone, not sent through
    the gateway), mirrored so operators see the whole conversation; such a message is also a
    note (`is_note`), never a customer's words, and destinations show it marked as such.
    """

    conversation_id: str
    native_id: str
    sender: Sender
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    quoted_native_id: str | None = None
    quoted_text: str | None = None
    location: Location | None = None
    contacts: tuple[Contact, ...] = ()
    forwarded: bool = False
    is_group: bool = False
    conversation_name: str | None = None
    timestamp: float | None = None
    is_note: bool = False
    from_me: bool = False
    extra: Mapping[str, JSON] = field(default_factory=dict)
    kind: Literal["message"] = "message"


@dataclass(frozen=True, slots=True)
class Edit:
    """The source changed the text of a message it sent earlier."""

    conversation_id: str
    native_id: str
    text: str
    extra: Mapping[str, JSON] = field(default_factory=dict)
    kind: Literal["edit"] = "edit"


@dataclass(frozen=True, slots=True)
class Delete:
    """The source deleted a message it sent earlier."""

    conversation_id: str
    native_id: str
    extra: Mapping[str, JSON] = field(default_factory=dict)
    kind: Literal["delete"] = "delete"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The source reports what happened to a message the gateway sent through it."""

    native_id: str
    status: DeliveryStatus
    conversation_id: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    timestamp: float | None = None
    kind: Literal["status"] = "status"


@dataclass(frozen=True, slots=True)
class AccountState:
    """A channel account changed state (needs QR, banned, ...); `qr` is a data: URL image.

    `phone` (international digits) and `name` (the WhatsApp account's name) identify the
    number to people, where the provider tells them."""

    status: AccountStatus
    detail: str | None = None
    qr: str | None = None
    phone: str | None = None
    name: str | None = None
    kind: Literal["account"] = "account"


#: Anything an `InboundEvent` carries.
Event: TypeAlias = Message | Edit | Delete | StatusUpdate | AccountState


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One event parsed from a webhook, with the key that makes it unique for its provider.

    `target` is the provider's sub-address the event came in on (a Bitrix24 portal and line,
    for example); routes bind a channel to a CRM instance *and* a target.
    """

    dedupe_key: str
    event: Event
    target: str | None = None


def event_to_json(event: Event) -> dict[str, JSON]:
    """A plain JSON-able dict of an event; `event_from_json` reverses it."""
    data: dict[str, JSON] = _plain(event)
    if isinstance(event, StatusUpdate):
        data["status"] = event.status.name.lower()
    elif isinstance(event, AccountState):
        data["status"] = event.status.value
    return data


_FIELDS: dict[type, tuple[str, ...]] = {}
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """`dataclasses.asdict` for the model's shapes, faster: it runs for every event on the
    webhook path. Containers are copied as asdict copies them; leaves (strings, numbers,
    enums, None) are immutable, so asdict's deep copy of them returns them unchanged."""
    cls = type(value)
    if cls in _LEAVES:
        return value
    names = _FIELDS.get(cls)
    if names is None and is_dataclass(cls):
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if cls is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return cls(_plain(item) for item in value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def event_from_json(data: Mapping[str, JSON]) -> Event:
    """Rebuild an event persisted with `event_to_json`."""
    values = dict(data)
    kind = values.pop("kind")
    if kind == "message":
        values["sender"] = Sender(**values["sender"])
        values["attachments"] = tuple(Attachment(**a) for a in values.get("attachments", ()))
        values["contacts"] = tuple(
            Contact(name=c["name"], phones=tuple(c.get("phones", ())), vcard=c.get("vcard"))
            for c in values.get("contacts", ())
        )
        if values.get("location") is not None:
            values["location"] = Location(**values["location"])
        return Message(**values)
    if kind == "edit":
        return Edit(**values)
    if kind == "delete":
        return Delete(**values)
    if kind == "status":
        values["status"] = DeliveryStatus[str(values["status"]).upper()]
        return StatusUpdate(**values)
    if kind == "account":
        values["status"] = AccountStatus(values["status"])
        return AccountState(**values)
    raise ValueError(f"unknown event kind {kind!r}")
