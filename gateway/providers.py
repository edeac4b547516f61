"""The provider contract: what a channel or CRM plugin implements.

A plugin registers a `Provider` subclass through the `register_providers` hook. The core
makes one instance of it per configured instance (`[channels.NAME]` or `[crms.NAME]` in the
settings) and talks to it only through the methods below, in normalized types from
`gateway.models`. Delivery methods take a batch and return one outcome per item, in order:
a `Sent`, or a `DeliveryError` (temporary, ambiguous or permanent) for that item.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from gateway.errors import DeliveryError
from gateway.models import (
    JSON,
    AccountState,
    AccountStatus,
    Attachment,
    Delete,
    Edit,
    InboundEvent,
    Message,
    StatusUpdate,
)

if TYPE_CHECKING:
    import httpx
    from starlette.responses import Response

    from gateway.ports import Fetcher, MediaStorage

#: Which side a provider is on: a messenger account ("channel") or where operators answer ("crm").
ProviderKind = Literal["channel", "crm"]
Direction = Literal["both", "inbound", "outbound"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can take, as a destination. The core reads every field, so a
    provider never has to adapt a message itself (`gateway.shaping`, before `send`):

    * `max_text_length`: longer texts are split into several messages, cut at paragraph,
      line or word ends; the first quotes, files follow the last piece.
    * `media_kinds`: a file of another kind is sent as a link in the text.
    * `max_file_size`: a file known to be larger is sent as a link in the text.
    * `quotes`: without them, a quote arrives as a `»` line with the quoted text.
    * `edits`, `deletes`: without them, an edit or delete arrives as a note (a `Message`
      with `is_note=True` quoting the original).
    * `groups`: without them, a group message carries its author's name before the text.
    * `read_receipts`: the instance shows "read" marks; a `read` status is handed to
      `apply_status` only when it is True (other statuses go whenever `wants_statuses`).
    * `max_batch`, `idempotent_sends`, `finds_sent`, `settle_seconds`, `wants_acks`,
      `wants_statuses`, `history`: see below.
    """

    media_kinds: frozenset[str] = frozenset(
        {"image", "video", "audio", "voice", "document", "sticker", "file"}
    )
    quotes: bool = True
    edits: bool = False
    deletes: bool = False
    read_receipts: bool = False
    groups: bool = False
    max_text_length: int = 4096
    max_file_size: int = 16 * 1024 * 1024
    #: Items per `send`/`acknowledge`/`apply_status` call.
    max_batch: int = 1
    # True when resending the same item cannot double it at the destination (it dedupes on
    # our id); False means an ambiguous failure is parked instead of retried blindly.
    idempotent_sends: bool = False
    # True when the provider implements `find_sent`: after an ambiguous failure the core asks
    # the destination whether the item landed instead of parking it for a person.
    finds_sent: bool = False
    # How long after an attempt began the destination may still act on it (a request still
    # running there, a file being downloaded): `find_sent` is not asked before then, since
    # "not there yet" could still become "there".
    settle_seconds: float = 0.0
    # Whether the source wants `acknowledge` calls (Bitrix24 clears its "sending" spinner) and
    # `apply_status` calls for messages it gave us; without them no such jobs are made.
    wants_acks: bool = False
    wants_statuses: bool = False
    # True when the provider implements `history`: what the account received in the last
    # days can be imported when the channel is linked ([history], `Hub.import_history`).
    history: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """A binding of a channel instance to a CRM instance and target, with a direction.

    `direction` is seen from the customer: "inbound" moves channel -> CRM only,
    "outbound" CRM -> channel only, "both" both ways.
    """

    name: str
    channel: str
    crm: str
    target: str | None = None
    direction: Direction = "both"
    origin: Literal["settings", "store"] = "settings"

    def carries(self, source: str) -> bool:
        """Whether events from instance `source` travel along this route."""
        if source == self.channel:
            return self.direction in ("both", "inbound")
        if source == self.crm:
            return self.direction in ("both", "outbound")
        return False

    def other_side(self, source: str) -> str:
        return self.crm if source == self.channel else self.channel


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An inbound HTTP request, read fully, handed to the provider that owns its instance.

    `subpath` is what follows `/webhooks/{instance}/` (a URL secret, or a page name).
    Header names are lower-case.
    """

    method: str
    subpath: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class WebhookResult:
    """What a provider made of a webhook: events to persist and, optionally, the reply.

    The core commits `events` before it answers; `response` (e.g. a verification challenge
    or an HTML page) replaces the default `{"ok": true, ...}` JSON reply.
    """

    events: list[InboundEvent] = field(default_factory=list)
    response: Response | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One item the pipeline asks a destination to send.

    `target_native_id` is the destination's id of the message an `Edit`/`Delete` refers to;
    `quoted_target_id` the destination's id of the quoted message; both come from the id map.
    """

    job_id: int
    route: Route
    source: str
    event: Message | Edit | Delete
    target_native_id: str | None = None
    quoted_target_id: str | None = None
    attempt: int = 1
    #: When an earlier attempt whose outcome is unknown began (UNIX seconds), else None:
    #: `find_sent` looks for what was sent from then on.
    sending_since: float | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """Success: the destination's own id for what was sent, and data to keep with it."""

    native_id: str
    extra: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    """Tells the source of a message what became of it at the destination.

    `delivered_id` is the destination's id when it was accepted; `error` the reason when it
    was refused for good (the source shows it to whoever wrote the message).
    """

    job_id: int
    route: Route
    message: Message | Edit | Delete
    delivered_id: str | None = None
    error: DeliveryError | None = None


@dataclass(frozen=True, slots=True)
class StatusNotice:
    """A delivery status to show at the source of a message, translated to its own id."""

    job_id: int
    route: Route
    update: StatusUpdate
    message_extra: Mapping[str, JSON] = field(default_factory=dict)
    #: The id the message has where it went (the one the status was reported for), e.g.
    #: the WhatsApp id of an operator's reply; `update.native_id` is the source's own id.
    destination_id: str | None = None


@dataclass(frozen=True, slots=True)
class NotLanded:
    """`find_sent`: the destination has no trace of the item, so sending it again cannot
    double it."""

    detail: str = ""


#: What `send`, `acknowledge` and `apply_status` say of one item: done (`Sent`, or None when
#: there is no id to keep), or why not (a `DeliveryError`: temporary, ambiguous or permanent).
Outcome = Sent | DeliveryError | None
#: What `find_sent` says of one item: it landed (`Sent`, with the destination's id), it did
#: not (`NotLanded`), or the destination could not tell now (`TemporaryError`: ask again
#: later) or cannot be asked about it at all (`PermanentError`: a person must look).
Landing = Sent | NotLanded | DeliveryError


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A message template a channel's provider approved (WhatsApp Cloud API), as a CRM may
    offer it: the parameters are filled in order."""

    name: str
    language: str
    parameter_count: int = 0


async def send_each(
    batch: Sequence[Outgoing], send_one: Callable[[Outgoing], Awaitable[Outcome]]
) -> list[Outcome]:
    """`send` for an API that takes one message per request: one call per item, in order,
    a `DeliveryError` raised for an item becoming that item's outcome."""
    outcomes: list[Outcome] = []
    for item in batch:
        try:
            outcomes.append(await send_one(item))
        except DeliveryError as exc:
            outcomes.append(exc)
    return outcomes


@dataclass(frozen=True, slots=True)
class MediaDownload:
    """Where the core downloads an attachment marked `rehost`, and the headers it sends
    (the provider's credentials: they never reach logs, and are dropped on a redirect to
    another host)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


class ProviderState(Protocol):
    """Durable key/value storage private to one instance (tokens, cursors, chat ids).

    The store is shared by every gateway process. A plugin that keeps a copy of some of
    it in memory calls `changed()` after writing what other processes' copies must see
    (an install, new tokens), and re-reads its copy when `generation` moved: it counts
    the `changed()` calls of every process, as far as this one has heard (within
    `[store] state_check_seconds`, at once on PostgreSQL).
    """

    generation: int

    async def changed(self) -> None:
        """Announce to every process (this one too) that copies of this state are stale."""
        ...

    async def get(self, key: str) -> JSON | None: ...

    async def put(self, key: str, value: JSON) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]: ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion on `key` across every process sharing the store."""
        ...


class Hub(Protocol):
    """What a provider may ask of the running gateway."""

    async def emit(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        """Persist events that did not arrive by webhook (polling, refills); True if new."""
        ...

    def instance_names(self, kind: ProviderKind | None = None) -> list[str]: ...

    def provider_of(self, instance: str) -> str:
        """The provider behind `instance` (its plugin's name, e.g. `greenapi`)."""
        ...

    def channel_portals(self, channel: str) -> frozenset[str]:
        """`[channels.NAME] portals`: the CRM tenants (for Bitrix24 member_ids or domains)
        that may see and link `channel`; empty when the channel is unassigned (any)."""
        ...

    async def account_state(self, instance: str) -> AccountState: ...

    async def routes(self) -> list[Route]: ...

    async def add_route(self, route: Route) -> None: ...

    async def remove_route(self, name: str) -> None: ...

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        """Whether `native_id` is a message the gateway itself sent through `instance`."""
        ...

    async def sends_in_flight(self, instance: str) -> bool:
        """Whether any process may be sending through `instance` now (not yet recorded)."""
        ...

    def webhook_url(self, instance: str, subpath: str = "") -> str: ...

    async def import_history(self, route: str, days: float | None = None) -> bool:
        """Import what route `route`'s channel received in the last `days` (None: the
        `[history] days` default) into the route, behind live traffic, in the customer's
        order, each message once; False when there is nothing to import (0 days, or a
        provider that keeps no history). Call it right after `add_route`."""
        ...

    def history_days(self) -> float:
        """`[history] days`: how much history a link imports unless told (0: none)."""
        ...

    def conversation_for_phone(self, instance: str, phone: str) -> str:
        """The conversation id channel `instance` gives the chat with `phone` as a person
        typed it; `gateway.NotAPhoneNumber` when it is no number, `KeyError` when
        `instance` is no channel."""
        ...

    async def message_templates(self, instance: str) -> list[MessageTemplate]:
        """The approved templates of channel `instance` (empty for providers without)."""
        ...


@dataclass(slots=True)
class InstanceContext:
    """Everything an instance gets from the core; tests build one with `gateway.testing`."""

    name: str
    config: Mapping[str, Any]
    http: httpx.AsyncClient
    state: ProviderState
    hub: Hub
    media: MediaStorage
    fetcher: Fetcher
    public_url: str


class Provider:
    """Base of channel and CRM providers. Subclass `ChannelProvider` or `CRMProvider`."""

    kind: ClassVar[ProviderKind]
    #: The value of `provider = "..."` that selects this class in the settings.
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: May be replaced per instance in `__init__` (e.g. a batch size taken from settings).
    capabilities: Capabilities = Capabilities()
    #: Settings keys this provider needs, with a one-line help each (checked by `gateway check`).
    required_settings: ClassVar[Mapping[str, str]] = {}
    #: Optional keys with their default values.
    optional_settings: ClassVar[Mapping[str, Any]] = {}
    #: Keys whose values are secrets: never logged, never shown by the admin API.
    secret_settings: ClassVar[frozenset[str]] = frozenset()
    #: What the service calling this provider's webhooks needs of `public_url`: "internet"
    #: (a host it can reach: a dotted name, not loopback nor a private address) and/or
    #: "https". `gateway check` and `gateway run` refuse a `public_url` that falls short,
    #: unless `allow_local_public_url = true` (a rehearsal, an on-premise portal).
    public_url_needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, context: InstanceContext) -> None:
        self.context = context
        self.instance = context.name
        self.config: Mapping[str, Any] = {**self.optional_settings, **context.config}

    @classmethod
    def validate_settings(cls, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """Problems with one instance's settings as (key, what is wrong, how to fix)."""
        problems = []
        for key, help_text in cls.required_settings.items():
            if config.get(key) in (None, ""):
                problems.append((key, "is missing", f"set it: {help_text}"))
        return problems

    @classmethod
    def check_route_target(cls, target: str | None) -> tuple[str, str] | None:
        """(what is wrong, how to fix) when `target` cannot address anything of this provider."""
        return None

    @classmethod
    async def stored_problems(
        cls, instance: str, state: ProviderState, routes: Sequence[Route]
    ) -> list[str]:
        """What needs a person in this instance's stored state (`gateway status`), read
        without a running instance: e.g. a route to a portal that is not installed."""
        return []

    async def start(self) -> None:
        """Open connections, point the provider's webhook at the gateway; may raise."""

    async def stop(self) -> None:
        """Release what `start` took."""

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        """Authenticate `request` and parse it; raise `BadRequest`/`Unauthorized` to refuse."""
        raise NotImplementedError

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        """Send each item; return one outcome per item, in order."""
        raise NotImplementedError

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        """Ask the destination whether each item, sent earlier with an unknown outcome (a
        crash or a timeout during the call), landed; one `Landing` per item, in order.

        Only called when `capabilities.finds_sent` is set, and only `settle_seconds` after
        the attempt began. Ask as few requests as the API allows (one for many items).
        """
        raise NotImplementedError

    async def acknowledge(self, acks: Sequence[Ack]) -> Sequence[Outcome]:
        """Tell the source side what became of messages it gave us (default: nothing)."""
        return [None] * len(acks)

    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        """Show delivery statuses at this side (default: nothing)."""
        return [None] * len(notices)

    async def history(self, since: float) -> Sequence[InboundEvent]:
        """What the account received since `since` (unix seconds), oldest first, as the
        events its webhooks would have made, with the same dedupe keys (so a message that
        also arrives by webhook has one effect). Only called when `capabilities.history`
        is set; keep to the provider's rate limits. Raise `TemporaryError` to be asked
        again later, `PermanentError` when the history cannot be had. Default: nothing."""
        return []

    async def media_download(self, attachment: Attachment) -> MediaDownload:
        """How to download an attachment this instance marked `rehost=True` (default: its
        URL, no headers). Override to add the provider's auth headers, or to turn a media
        id into a short-lived URL first. Raise `DeliveryError` when that lookup fails."""
        return MediaDownload(attachment.url)

    async def account_state(self) -> AccountState:
        """The account's state now, as far as the provider tells (default: unknown)."""
        return AccountState(AccountStatus.UNKNOWN)

    def setup_instructions(self) -> list[str]:
        """Steps a person must take by hand (e.g. a callback URL to paste); `gateway check`."""
        return []

    async def check_warnings(self, *, stored: bool) -> list[str]:
        """Risky but valid settings `gateway check` should point out (e.g. tenant isolation);
        with `stored`, the instance's state (`context.state`) may be read too."""
        return []


class ChannelProvider(Provider):
    """A messenger account (a WhatsApp number) the customers write to."""

    kind: ClassVar[ProviderKind] = "channel"

    def conversation_for_phone(self, phone: str) -> str:
        """The conversation id of the 1:1 chat with `phone` (international digits, see
        `gateway.phone_digits`), spelled as this provider's webhooks spell it, so a
        conversation a CRM starts and the customer's answer share one id. Default: the
        digits themselves."""
        return phone

    async def message_templates(self) -> list[MessageTemplate]:
        """Approved message templates a CRM may name (default: none; the text goes as is)."""
        return []


class CRMProvider(Provider):
    """Where operators answer (Bitrix24 Open Lines)."""

    kind: ClassVar[ProviderKind] = "crm"

    async def channel_state_changed(self, channel: str, state: AccountState) -> None:
        """Channel `channel`'s account changed state (in the process that learnt it; others
        may learn it too, so tell people once: deduplicate in the shared state). The
        webhook or poll that brought the change waits for this: keep it short."""
        return None
