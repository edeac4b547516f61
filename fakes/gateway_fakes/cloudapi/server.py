"""`FakeCloudApi`: the state, the test-facing driver methods and the webhook sender."""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import httpx

from .api import build_app
from .errors import MAGIC_NUMBERS, GraphError, status_error
from .ids import IdFactory
from .payloads import DEFAULT_MEDIA, INBOUND_KINDS, MEDIA_KINDS, inbound_object, status_item
from .sending import normalize_number
from .state import (
    Call,
    Delivery,
    Fault,
    InboundMessage,
    Media,
    PendingRetry,
    PhoneState,
    ReadReceipt,
    SentMessage,
    Template,
    apply_transition,
)
from .webhooks import PendingEvent, backoff, build_posts, post, reorder_statuses, serialize

JSON = Any
DAY = 86400.0
# Default credentials: obviously fake, shaped like Meta's (system-user tokens start "EAAG").
FAKE_BEARER = "EAAGfakeAccessToken0000000000"
FAKE_APP_KEY = "fake-app-secret"


class FakeCloudApi:
    """An in-memory WhatsApp Cloud API for one business phone number.

    Serve `app` under `https://graph.facebook.com` *and* `https://lookaside.fbsbx.com` (media
    URLs point at the latter). Everything time-based reads `clock`, nothing sleeps, and every
    id comes from a counter, so runs are deterministic.
    """

    def __init__(
        self,
        *,
        phone_number_id: str = "106540352242922",
        waba_id: str = "102290129340398",
        access_token: str = FAKE_BEARER,
        app_secret: str = FAKE_APP_KEY,
        display_phone_number: str = "15550783881",
        verified_name: str = "WhatsChat Test",
        version: str = "v21.0",
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
        callback_url: str | None = None,
    ) -> None:
        self.phone_number_id = phone_number_id
        self.waba_id = waba_id
        self.access_token = access_token
        self.app_secret = app_secret
        self.display_phone_number = display_phone_number
        self.verified_name = verified_name
        self.version = version
        self.clock = clock
        self.http = http
        self.callback_url = callback_url

        # knobs, all plain attributes a test may change
        self.mps = 80  # throughput per number (130429); inbound counts too, as on Meta
        self.pair_interval: float | None = 6.0  # seconds per message to one user (131056)
        self.pair_burst = 1  # sends to one user allowed back to back before 131056
        self.window_seconds = DAY  # customer-service window (131047)
        self.error_delivery: Literal["sync", "webhook"] = "sync"
        self.auto_sent_status = True  # queue a `sent` status for each accepted message
        self.media_url_ttl = 300.0
        self.media_url_expired_status = 404
        self.media_base_url = "https://lookaside.fbsbx.com"
        self.inbound_media_ttl = 7 * DAY
        self.uploaded_media_ttl = 30 * DAY
        self.token_expired = False
        self.timeout_hang: float | None = None  # standalone: hang this long before "timing out"
        self.changes_per_entry = 2
        self.webhook_timeout = 10.0
        self.webhook_retry_base = 15.0
        self.webhook_retry_cap = 3600.0
        self.webhook_retry_horizon = 7 * DAY
        self.magic_numbers: dict[str, int] = dict(MAGIC_NUMBERS)
        self.wa_id_aliases: dict[str, str] = {}  # `to` digits -> wa_id Meta answers with

        # state
        self.ids = IdFactory(phone_number_id)
        self.phone = PhoneState()
        self.calls: list[Call] = []
        self.sent: list[SentMessage] = []
        self.inbound: list[InboundMessage] = []
        self.media: dict[str, Media] = {}
        self.read_receipts: list[ReadReceipt] = []
        self.templates: dict[tuple[str, str], Template] = {}
        self.faults: list[Fault] = []
        self.pending: list[PendingEvent] = []
        self.deliveries: list[Delivery] = []
        self.retries: list[PendingRetry] = []
        self.dead_webhooks: list[PendingRetry] = []
        self.names: dict[str, str] = {}
        self.last_inbound_at: dict[str, float] = {}
        self._recent: deque[float] = deque()
        self._pair: dict[str, tuple[float, float]] = {}
        self._media_urls: dict[str, tuple[str, float]] = {}
        self._conversations: dict[str, tuple[str, float]] = {}

        self.app = build_app(self)

    # ------------------------------------------------------------------ lookups

    @property
    def base_url(self) -> str:
        return f"https://graph.facebook.com/{self.version}"

    @property
    def metadata(self) -> dict[str, str]:
        return {
            "display_phone_number": self.display_phone_number,
            "phone_number_id": self.phone_number_id,
        }

    @property
    def inbound_ids(self) -> set[str]:
        return {message.id for message in self.inbound}

    @property
    def last_sent(self) -> SentMessage:
        return self.sent[-1]

    def sent_to(self, wa_id: str) -> list[SentMessage]:
        return [message for message in self.sent if message.wa_id == wa_id]

    def message(self, message_id: str) -> SentMessage:
        for sent in self.sent:
            if sent.id == message_id:
                return sent
        raise KeyError(f"the gateway sent no message {message_id}")

    def window_open(self, wa_id: str) -> bool:
        """Whether free-form messages to `wa_id` are allowed now."""
        if self.magic_numbers.get(wa_id) == 131047:
            return False
        last = self.last_inbound_at.get(wa_id)
        return last is not None and self.clock() - last < self.window_seconds

    # ------------------------------------------------------------------ media

    def store_media(
        self,
        content: bytes,
        mime_type: str,
        *,
        filename: str | None = None,
        origin: Literal["upload", "inbound"] = "upload",
    ) -> Media:
        """Keep a media object as if uploaded (30-day id) or received (7-day id)."""
        now = self.clock()
        ttl = self.uploaded_media_ttl if origin == "upload" else self.inbound_media_ttl
        media = Media(
            id=self.ids.media(),
            content=content,
            mime_type=mime_type,
            sha256=hashlib.sha256(content).hexdigest(),
            filename=filename,
            origin=origin,
            created_at=now,
            expires_at=now + ttl,
        )
        self.media[media.id] = media
        return media

    def live_media(self, media_id: str) -> Media | None:
        media = self.media.get(media_id)
        if media is None or media.deleted or self.clock() >= media.expires_at:
            return None
        return media

    def media_url(self, media: Media) -> str:
        """A fresh short-lived download URL on the lookaside host."""
        expires_at = self.clock() + self.media_url_ttl
        key = self.ids.token()
        self._media_urls[key] = (media.id, expires_at)
        return (
            f"{self.media_base_url}/whatsapp_business/attachments/"
            f"?mid={media.id}&ext={int(expires_at)}&hash={key}"
        )

    def resolve_media_url(self, key: str) -> tuple[Media, float] | None:
        found = self._media_urls.get(key)
        if found is None:
            return None
        return self.media[found[0]], found[1]

    # ------------------------------------------------------------------ limits

    def check_throughput(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.mps:
            raise GraphError(130429)

    def _pair_tokens(self, wa_id: str, now: float) -> float:
        assert self.pair_interval is not None
        tokens, last = self._pair.get(wa_id, (float(self.pair_burst), now))
        return min(float(self.pair_burst), tokens + (now - last) / self.pair_interval)

    def check_pair_rate(self, wa_id: str, now: float) -> None:
        if self.pair_interval is not None and self._pair_tokens(wa_id, now) < 1.0:
            raise GraphError(131056)

    def consume_rate(self, wa_id: str, now: float) -> None:
        self._recent.append(now)
        if self.pair_interval is not None:
            self._pair[wa_id] = (self._pair_tokens(wa_id, now) - 1.0, now)

    # ------------------------------------------------------------------ test knobs

    def fail_next(
        self,
        n: int = 1,
        *,
        code: int = 131000,
        http_status: int | None = None,
        timeout: bool = False,
        after_accept: bool = True,
        html: bool = False,
        on: str = "messages",
    ) -> None:
        """Make the next `n` calls to endpoint group `on` fail.

        `on`: "messages", "media" (upload), "node" (GET/DELETE of a media id or the phone
        number), "download" (lookaside) or "any". A Graph error with `code` by default; `html`
        gives a proxy-style HTML page (502); `timeout` raises `httpx.ReadTimeout` in the
        client, after the message was accepted unless `after_accept=False`.
        """
        for _ in range(n):
            self.faults.append(Fault(code, http_status, timeout, after_accept, html, on))

    def take_fault(self, kind: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.on in (kind, "any"):
                return self.faults.pop(index)
        return None

    def expire_token(self) -> None:
        """Every Graph call now fails with 190 (subcode 463) until `token_expired` is reset."""
        self.token_expired = True

    def register_template(
        self,
        name: str,
        language: str = "en_US",
        *,
        body_params: int = 0,
        category: str = "UTILITY",
        status: Literal["APPROVED", "PAUSED", "DISABLED"] = "APPROVED",
    ) -> Template:
        """Once any template is registered, sends of unregistered ones fail with 132001."""
        template = Template(name, language, body_params, category, status)
        self.templates[(name, language)] = template
        return template

    def transition(self, event: str) -> PhoneState:
        """Drive the phone-number state machine (see `state.TRANSITIONS`); queues the
        `phone_number_quality_update` / `account_update` webhooks Meta would send."""
        now = self.clock()
        changes = apply_transition(
            self.phone, event, display_phone_number=self.display_phone_number, now=now
        )
        if event == "upgrade_throughput":
            self.mps = max(self.mps, 1000)
        for field, value in changes:
            self.pending.append(PendingEvent(field, "value", value, time=int(now)))
        return self.phone

    # ------------------------------------------------------------------ customers

    def customer_writes(
        self,
        wa_id: str,
        text: str = "",
        *,
        kind: str = "text",
        context: str | None = None,
        name: str | None = None,
        media: bytes | None = None,
        mime_type: str | None = None,
        filename: str | None = None,
        payload: JSON = None,
        forwarded: bool = False,
        frequently_forwarded: bool = False,
    ) -> str:
        """A customer sends a message; it is queued for `deliver_webhooks`. Returns its wamid.

        `text` is the body, caption, emoji (reaction), title (interactive), button text, or
        location name, depending on `kind`. `context` is the quoted message id (for
        `reaction`, the reacted one; for `button`, defaults to the last template sent).
        """
        if kind not in INBOUND_KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {sorted(INBOUND_KINDS)}")
        wa_id = normalize_number(wa_id)
        now = self.clock()
        if name is not None:
            self.names[wa_id] = name
        profile_name = self.names.setdefault(wa_id, f"Customer {wa_id[-4:]}")
        stored: Media | None = None
        if kind in MEDIA_KINDS:
            default_mime, default_content = DEFAULT_MEDIA[kind]
            # Distinct default bytes per message, so sha256 and ids never collide across tests.
            content = (
                media if media is not None else default_content + str(len(self.media)).encode()
            )
            stored = self.store_media(
                content, mime_type or default_mime, filename=filename, origin="inbound"
            )
        mine = self.sent_to(wa_id)
        if kind == "button" and context is None:
            templates = [m for m in mine if m.type == "template"]
            context = templates[-1].id if templates else None
        reacted = context or (mine[-1].id if mine else None)
        if kind == "reaction" and reacted is None and payload is None:
            raise ValueError("a reaction needs context=<message id> (nothing was sent to react to)")
        wire, obj = inbound_object(
            kind,
            text,
            wa_id=wa_id,
            media=stored,
            payload=payload,
            reacted_id=reacted,
            filename=filename,
        )
        message_id = self.ids.inbound(wa_id)
        message: dict[str, JSON] = {
            "from": wa_id,
            "id": message_id,
            "timestamp": str(int(now)),
            "type": wire,
        }
        quoted: dict[str, JSON] = {}
        if context is not None and kind != "reaction":
            ours = any(sent.id == context for sent in self.sent)
            quoted.update({"from": self.display_phone_number if ours else wa_id, "id": context})
        if forwarded:
            quoted["forwarded"] = True
        if frequently_forwarded:
            quoted["frequently_forwarded"] = True
        if quoted:
            message["context"] = quoted
        if obj is not None:
            message[wire] = obj
        if kind == "unsupported":
            message["errors"] = [status_error(131051)]
        contact = {"profile": {"name": profile_name}, "wa_id": wa_id}
        self.inbound.append(InboundMessage(message_id, wa_id, wire, message, contact, now))
        self.pending.append(PendingEvent("messages", "message", message, contact=contact))
        self.last_inbound_at[wa_id] = now
        self._recent.append(now)  # Meta counts inbound traffic against the number's mps
        return message_id

    # ------------------------------------------------------------------ statuses

    def _status(self, message_id: str, status: str, errors: list[JSON] | None = None) -> None:
        sent = self.message(message_id)
        now = self.clock()
        conversation_id, expires = self._conversations.get(sent.wa_id, ("", 0.0))
        if now >= expires:
            conversation_id, expires = self.ids.conversation(), now + DAY
            self._conversations[sent.wa_id] = (conversation_id, expires)
        item = status_item(sent, status, now=now, conversation_id=conversation_id, errors=errors)
        sent.status = status
        if errors:
            sent.errors = list(errors)
        self.pending.append(PendingEvent("messages", "status", item))

    def mark_sent(self, message_id: str) -> None:
        self._status(message_id, "sent")

    def mark_delivered(self, message_id: str) -> None:
        self._status(message_id, "delivered")

    def mark_read(self, message_id: str) -> None:
        """Queue `read` (Meta may skip `delivered`: call `mark_delivered` too if wanted)."""
        self._status(message_id, "read")

    def mark_played(self, message_id: str) -> None:
        self._status(message_id, "played")

    def mark_failed(self, message_id: str, code: int = 131026, details: str | None = None) -> None:
        self._status(message_id, "failed", [status_error(code, details)])

    def emit_error(self, code: int, details: str | None = None) -> None:
        """Queue an out-of-band `value.errors[]` notification (no messages or statuses)."""
        self.pending.append(PendingEvent("messages", "error", status_error(code, details)))

    # ------------------------------------------------------------------ webhooks

    def _target(self, url: str | None) -> str:
        target = url or self.callback_url
        if not target:
            raise RuntimeError("FakeCloudApi has no callback_url to deliver webhooks to")
        return target

    async def deliver_webhooks(
        self, *, batch: bool = True, duplicate: int = 0, shuffle_statuses: bool = False
    ) -> list[Delivery]:
        """POST every queued event to `callback_url`, signed; returns the attempts made.

        `batch`: one POST for everything (messages grouped per customer, statuses together,
        changes spread over entries of `changes_per_entry`); else one POST per event.
        `duplicate`: post each body that many extra times (byte-identical, same signature).
        `shuffle_statuses`: statuses reach the gateway in reverse order.
        Failed POSTs (non-2xx or transport error) wait in `retries` for `retry_webhooks`.
        """
        url = self._target(None)
        events, self.pending = self.pending, []
        if shuffle_statuses:
            events = reorder_statuses(events)
        posts = build_posts(
            events,
            waba_id=self.waba_id,
            metadata=self.metadata,
            batch=batch,
            changes_per_entry=self.changes_per_entry,
        )
        made: list[Delivery] = []
        for payload in posts:
            body, headers = serialize(payload, self.app_secret)
            for _ in range(1 + duplicate):
                made.append(await self._attempt(url, body, headers, None))
        return made

    async def retry_webhooks(self, *, force: bool = False) -> list[Delivery]:
        """Re-post failed bodies whose backoff has elapsed by `clock` (all of them if `force`,
        for tests on a wall clock); drop those older than `webhook_retry_horizon` (7 days)
        into `dead_webhooks`."""
        url = self._target(None)
        now = self.clock()
        waiting, self.retries = self.retries, []
        made: list[Delivery] = []
        for item in waiting:
            if now - item.first_at > self.webhook_retry_horizon:
                self.dead_webhooks.append(item)
            elif item.next_at > now and not force:
                self.retries.append(item)
            else:
                made.append(await self._attempt(url, item.body, item.headers, item))
        return made

    async def _attempt(
        self, url: str, body: bytes, headers: dict[str, str], retry: PendingRetry | None
    ) -> Delivery:
        now = self.clock()
        attempt = 1 if retry is None else retry.attempts + 1
        delivery = await post(
            self.http, url, body, headers, attempt=attempt, at=now, limit=self.webhook_timeout
        )
        self.deliveries.append(delivery)
        if not delivery.ok:
            wait = backoff(attempt, self.webhook_retry_base, self.webhook_retry_cap)
            if retry is None:
                retry = PendingRetry(body, headers, now, attempt, now + wait)
            else:
                retry.attempts, retry.next_at = attempt, now + wait
            self.retries.append(retry)
        return delivery

    async def verify_webhook(
        self, callback_url: str, verify_token: str, *, challenge: str | None = None
    ) -> bool:
        """Meta's subscription handshake; on success the URL becomes `callback_url`."""
        challenge = challenge or self.ids.challenge()
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token,
            "hub.challenge": challenge,
        }
        try:
            if self.http is None:
                async with httpx.AsyncClient() as client:
                    response = await client.get(callback_url, params=params)
            else:
                response = await self.http.get(callback_url, params=params)
        except httpx.HTTPError:
            return False
        ok = response.status_code == 200 and response.text == challenge
        if ok:
            self.callback_url = callback_url
        return ok
