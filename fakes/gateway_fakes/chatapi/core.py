"""`FakeChatApi`: one Chat API instance, its simulation API and its webhook sender."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.testing.fake_common import (
    SAMPLE_NAMES,
    CallRecord,
    Clock,
    FakeHttpError,
    FakeTimeout,
    Faults,
    IdGen,
    Magic,
    ManualClock,
    MediaStore,
    Result,
    is_group,
    magic_of,
    qr_png,
    sample_bytes,
    to_chat_id,
)
from gateway.testing.fake_delivery import (
    DeliveryReport,
    WebhookAttempt,
)

from .hooks import HookSender
from .model import (
    ACCOUNT_STATUSES,
    KIND_TYPES,
    MEDIA_TYPES,
    STATE_ALIASES,
    SUBSTATUSES,
    ChatApiSent,
    ChatApiSettings,
    InboundKind,
    StoredMessage,
    message_item,
    status_data,
    vcard,
)

# Sends to these never reach a phone; the API says so with `sent: false` [U wording].
REFUSED = {
    Magic.NO_ACCOUNT: "Recipient is not a WhatsApp user",
    Magic.FAILED: "Message could not be sent",
    Magic.NOT_IN_GROUP: "You are not a participant of this group",
    Magic.YELLOW_CARD: "Sending is suspended for this account",
}


class FakeChatApi:
    """A Chat API instance served at `/instance{ID}/{method}?token=...`.

    Tests drive it with `customer_writes`, `mark_delivered`, `set_state`, ... and push
    webhooks with `await deliver_webhooks()`; the gateway talks to `.app` over HTTP.
    """

    def __init__(
        self,
        instance_id: str = "1101",
        token: str = "tok",  # noqa: S107 - a fake credential for tests
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        host: str = "https://api.chat-api.test",
        me: str = "79876543210",
        me_name: str = "Shop",
        state: str = "authenticated",
        webhook_url: str = "",
        settings: Mapping[str, Any] | None = None,
        batch_size: int = 20,
        max_hook_attempts: int = 20,
        hook_retry_delay: float = 60.0,
        hook_timeout: float = 30.0,
        echo_sends: bool = True,
        auto_acks: Sequence[str] = ("sent",),
        loading_seconds: float = 0.0,
        qr_ttl: float = 60.0,
    ) -> None:
        self.instance_id = str(instance_id)
        self.token = token
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.http = http
        self.host = host.rstrip("/")
        self.me_id = to_chat_id(me)
        self.me_name = me_name
        self.settings = ChatApiSettings(webhookUrl=webhook_url)
        self.settings.update(settings or {})
        self.echo_sends = echo_sends
        self.auto_acks = tuple(auto_acks)
        self.loading_seconds = loading_seconds
        self.qr_ttl = qr_ttl

        self.ids = IdGen(f"chatapi:{self.instance_id}")
        self.faults = Faults()
        self.media = MediaStore(self.host)
        self.calls: list[CallRecord] = []
        self.sent: list[ChatApiSent] = []
        #: Chats marked read with /readChat.
        self.reads: list[str] = []
        self.history: list[StoredMessage] = []
        self.status_history: list[dict[str, Any]] = []
        self.names: dict[str, str] = {}
        self.hooks = HookSender(
            self.instance_id,
            self.clock,
            self.settings,
            batch_size=batch_size,
            max_attempts=max_hook_attempts,
            retry_delay=hook_retry_delay,
            timeout=hook_timeout,
        )

        self.status = "init"
        self.substatus = "normal"
        self._loading_until = 0.0
        self._qr_since = self.clock()
        self._qr_base = 0
        self._backlog: list[dict[str, Any]] = []
        self._message_number = 0
        self._queue_number = 0
        self._app: Starlette | None = None
        # The starting state is a given, not an event: nothing is announced for it.
        self.status = STATE_ALIASES.get(state, state)
        if self.status not in ACCOUNT_STATUSES:
            raise ValueError(f"unknown accountStatus {state!r}; one of {ACCOUNT_STATUSES}")
        if self.status == "loading":
            self._loading_until = self.clock() + self.loading_seconds

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What the plugin stores per instance: `{host}/instance{ID}`."""
        return f"{self.host}/instance{self.instance_id}"

    def url(self, method: str) -> str:
        return f"{self.base_url}/{method}?token={self.token}"

    @property
    def app(self) -> Starlette:
        if self._app is None:
            self._app = self.make_app()
        return self._app

    def make_app(self, *, deliver_every: float | None = None) -> Starlette:
        """A fresh ASGI app; `deliver_every` adds a background webhook pusher (standalone)."""
        from .api import build_app

        return build_app(self, deliver_every=deliver_every)

    # -- time and state --------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def advance(self, seconds: float) -> None:
        """Move a ManualClock forward and let time-based transitions happen."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the fake to run on a ManualClock")
        self.clock.advance(seconds)
        self.tick()

    def tick(self) -> None:
        if self.status == "loading" and self.clock() >= self._loading_until:
            self._enter("got qr code", "normal")

    @property
    def authenticated(self) -> bool:
        return self.status == "authenticated"

    def set_state(self, status: str, *, substatus: str = "normal") -> None:
        """Force `accountStatus` (Chat API names, or "authorized"/"notAuthorized")."""
        status = STATE_ALIASES.get(status, status)
        if status not in ACCOUNT_STATUSES:
            raise ValueError(f"unknown accountStatus {status!r}; one of {ACCOUNT_STATUSES}")
        if substatus not in SUBSTATUSES:
            raise ValueError(f"unknown substatus {substatus!r}; one of {SUBSTATUSES}")
        self._enter(status, substatus)

    def scan_qr(self) -> None:
        """The phone scans the QR code shown by `/status` or `/qr_code`."""
        if self.status != "got qr code":
            raise ValueError(f"no QR code to scan while {self.status!r}")
        self._enter("authenticated", "normal")

    def wake(self) -> None:
        """What `/status` does to a standby instance (spec 1.3: `init` wakes on a call)."""
        if self.status == "init":
            self._loading_until = self.clock() + self.loading_seconds
            self._enter("loading", "loading")

    def refresh_qr(self) -> None:
        self._qr_base = self.qr_version + 1
        self._qr_since = self.clock()

    @property
    def qr_version(self) -> int:
        # A QR code lives about a minute, then WhatsApp Web shows a new one.
        return self._qr_base + math.floor((self.clock() - self._qr_since) / self.qr_ttl)

    def qr_png(self) -> bytes:
        return qr_png(f"chatapi:{self.instance_id}:qr:{self.qr_version}")

    def qr_data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.qr_png()).decode()

    def status_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"accountStatus": self.status}
        if self.status == "got qr code":
            body["qrCode"] = self.qr_data_uri()
        body["statusData"] = status_data(self.status, self.substatus)
        return body

    def _enter(self, status: str, substatus: str) -> None:
        changed = (status, substatus) != (self.status, self.substatus)
        was_authenticated = self.authenticated
        if status == "got qr code" and self.status != "got qr code":
            self.refresh_qr()
        self.status, self.substatus = status, substatus
        if not changed:
            return
        self.status_history.append({"date": self.now(), "status": status})
        if self.settings.statusNotificationsOn:
            self.hooks.push(
                "status", {"accountStatus": status, "statusData": status_data(status, substatus)}
            )
        if self.authenticated and not was_authenticated:
            self._on_authenticated()

    def _on_authenticated(self) -> None:
        backlog, self._backlog = self._backlog, []
        for item in backlog:
            self._publish(item, webhook=not self.settings.ignoreOldMessages)
        for sent in self.sent:
            if sent.status == "queued":
                self._dispatch_sent(sent)

    # -- inbound simulation ----------------------------------------------------------------

    def customer_writes(
        self,
        chat: str | int,
        text: str = "",
        *,
        kind: InboundKind = "text",
        quoted: str | None = None,
        author: str | int | None = None,
        sender_name: str = "Customer",
        chat_name: str | None = None,
        caption: str | None = None,
        filename: str | None = None,
        content: bytes | None = None,
        location: tuple[float, float] | None = None,
        contacts: Sequence[tuple[str, str]] = (),
        forwarded: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A customer sends a message; returns its Chat API id (`false_<chat>_<id>`).

        `quoted` is the id of the message replied to; `author` is the participant in a
        group chat; `extra` overrides any item field (for types the fake does not model).
        Until the instance is authenticated, messages wait on the phone and arrive after.
        """
        chat_id = to_chat_id(chat)
        if is_group(chat_id) and author is None:
            raise ValueError("a group message needs author= (the participant)")
        author_id = to_chat_id(author) if author is not None else chat_id
        if not is_group(chat_id):
            self.names.setdefault(chat_id, chat_name or sender_name)
        wa_id = self.ids.hex(32)
        msg_id = f"false_{chat_id}_{wa_id}" + (f"_{author_id}" if is_group(chat_id) else "")
        body, caption = self._content(
            kind, wa_id, text, caption, filename, content, location, contacts
        )
        item = message_item(
            id=msg_id,
            body=body,
            type=KIND_TYPES[kind],
            from_me=False,
            author=author_id,
            time=self.now(),
            chat_id=chat_id,
            number=0,
            sender_name=sender_name,
            chat_name=chat_name or self.names.get(chat_id, chat_id),
            caption=caption,
            quoted=self.find(quoted) if quoted else None,
            quoted_id=quoted,
            forwarded=forwarded,
        )
        item.update(extra or {})
        if self.authenticated:
            self._publish(item)
        else:
            self._backlog.append(item)
        return msg_id

    def phone_writes(
        self,
        chat: str | int,
        text: str = "",
        *,
        kind: InboundKind = "text",
        quoted: str | None = None,
        caption: str | None = None,
        filename: str | None = None,
        content: bytes | None = None,
        location: tuple[float, float] | None = None,
    ) -> str:
        """The operator types on the phone itself: a `fromMe` item the API never sent."""
        chat_id = to_chat_id(chat)
        wa_id = self.ids.hex(32)
        msg_id = f"true_{chat_id}_{wa_id}"
        body, caption = self._content(kind, wa_id, text, caption, filename, content, location, ())
        item = message_item(
            id=msg_id,
            body=body,
            type=KIND_TYPES[kind],
            from_me=True,
            author=self.me_id,
            time=self.now(),
            chat_id=chat_id,
            number=0,
            sender_name=self.me_name,
            chat_name=self.names.get(chat_id, chat_id),
            caption=caption,
            quoted=self.find(quoted) if quoted else None,
            quoted_id=quoted,
        )
        self._publish(item)
        return msg_id

    def _content(
        self,
        kind: str,
        wa_id: str,
        text: str,
        caption: str | None,
        filename: str | None,
        content: bytes | None,
        location: tuple[float, float] | None,
        contacts: Sequence[tuple[str, str]],
    ) -> tuple[str, str | None]:
        """`body` and `caption` of an item: what Chat API puts there depends on the type."""
        if kind not in KIND_TYPES:
            raise ValueError(f"unknown kind {kind!r}; one of {sorted(KIND_TYPES)}")
        if kind in MEDIA_TYPES:
            name = filename or SAMPLE_NAMES[kind]
            data = content if content is not None else sample_bytes(name, wa_id)
            # Real bodies are provider-hosted download URLs; ours resolve to this app.
            url = self.media.put(f"{wa_id}/{name}", data)
            return url, caption if caption is not None else (text or None)
        if kind == "location":
            lat, lng = location or (55.7558, 37.6173)
            return f"{lat};{lng}", caption if caption is not None else (text or None)
        if kind in ("vcard", "multi_vcard"):
            people = list(contacts) or [("Contact", "79001112233")]
            cards = [vcard(name, phone) for name, phone in people]
            return text or (cards[0] if kind == "vcard" else "\n".join(cards)), caption  # [U] multi
        if kind == "call_log":
            return "[Call]", caption
        return text, caption

    def _publish(self, item: dict[str, Any], *, webhook: bool = True) -> StoredMessage:
        self._message_number += 1
        item["messageNumber"] = self._message_number
        stored = StoredMessage(self._message_number, item)
        self.history.append(stored)
        if webhook:
            self.hooks.push("messages", item)
        return stored

    def find(self, msg_id: str) -> StoredMessage | None:
        for stored in reversed(self.history):
            if stored.id == msg_id:
                return stored
        return None

    # -- outbound (called by the HTTP layer) -----------------------------------------------

    def destination(self, params: Mapping[str, Any]) -> str:
        chat, phone = params.get("chatId"), params.get("phone")
        if bool(chat) == bool(phone):
            raise FakeHttpError(400, {"error": "Provide exactly one of chatId or phone"})
        if phone:
            digits = str(phone).strip()
            if not digits.isdigit():
                raise FakeHttpError(400, {"error": "phone must be digits with country code"})
            return f"{digits}@c.us"
        chat_id = str(chat)
        if not re.fullmatch(r"\d+(-\d+)?@(c|g)\.us", chat_id):
            raise FakeHttpError(400, {"error": f"Wrong chatId {chat_id!r}"})
        return chat_id

    def send(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        type_: str,
        body: str,
        caption: str | None = None,
    ) -> Result:
        chat_id = self.destination(params)
        magic = magic_of(chat_id)
        if magic is Magic.RATE_LIMITED:
            raise FakeHttpError(429, {"error": "Too many requests"}, {"Retry-After": "1"})
        if magic is Magic.SERVER_ERROR:
            raise FakeHttpError(500, {"error": "Internal server error"})
        if magic is Magic.TIMEOUT:
            raise FakeTimeout(after_effect=False)
        digits = chat_id.split("@", 1)[0]
        if magic is not None and magic in REFUSED:
            return Result({"sent": False, "message": REFUSED[magic]})
        if len(digits) == 11 and digits.startswith("8") and not is_group(chat_id):
            # Spec section 0: 8-prefixed national numbers never reach anyone.
            return Result({"sent": False, "message": "Wrong number format: use 7XXXXXXXXXX"})
        quoted = params.get("quotedMsgId") or None
        self._queue_number += 1
        sent = ChatApiSent(
            id=f"true_{chat_id}_{self.ids.hex(20, '3EB0')}",
            method=method,
            chat_id=chat_id,
            type=type_,
            body=body,
            params=dict(params),
            queue_number=self._queue_number,
            at=self.clock(),
            caption=caption,
            quoted_msg_id=str(quoted) if quoted else None,
        )
        self.sent.append(sent)
        if self.authenticated:
            self._dispatch_sent(sent)
            message = f"Sent to {chat_id}"
        else:
            message = f"Message queued for {chat_id}; it is sent once the instance is authorised"
        response = {
            "sent": True,
            "message": message,
            "id": sent.id,
            "queueNumber": sent.queue_number,
        }
        if magic is Magic.TIMEOUT_AFTER_EFFECT:
            raise FakeTimeout(after_effect=True)
        return Result(response)

    def _dispatch_sent(self, sent: ChatApiSent) -> None:
        sent.status = "sent"
        item = message_item(
            id=sent.id,
            body=sent.body,
            type=sent.type,
            from_me=True,
            author=self.me_id,
            time=self.now(),
            chat_id=sent.chat_id,
            number=0,
            sender_name=self.me_name,
            chat_name=self.names.get(sent.chat_id, sent.chat_id),
            caption=sent.caption,
            quoted=self.find(sent.quoted_msg_id) if sent.quoted_msg_id else None,
            quoted_id=sent.quoted_msg_id,
        )
        stored = self._publish(item, webhook=self.echo_sends)
        sent.message_number = stored.number
        for status in self.auto_acks:
            if status != "sent" and magic_of(sent.chat_id) is Magic.NEVER_DELIVERED:
                break
            self.ack(sent.id, status)

    def queued(self) -> list[ChatApiSent]:
        return [s for s in self.sent if s.status == "queued"]

    # -- acks ------------------------------------------------------------------------------

    def sent_message(self, msg_id: str) -> ChatApiSent:
        for sent in self.sent:
            if sent.id == msg_id:
                return sent
        raise KeyError(f"the gateway never sent {msg_id!r}")

    def ack(self, msg_id: str, status: str) -> None:
        """Emit an `ack` item (only reaches the webhook with `ackNotificationsOn`)."""
        sent = self.sent_message(msg_id)
        if sent.status == "queued":
            raise ValueError(f"{msg_id} is still queued: the instance is not authenticated")
        sent.status = status
        sent.acks.append(status)
        if self.settings.ackNotificationsOn:
            item = {
                "id": sent.id,
                "queueNumber": sent.queue_number,
                "chatId": sent.chat_id,
                "status": status,
            }
            self.hooks.push("ack", item)

    def mark_delivered(self, msg_id: str) -> None:
        self.ack(msg_id, "delivered")

    def mark_read(self, msg_id: str) -> None:
        self.ack(msg_id, "viewed")

    # -- webhooks --------------------------------------------------------------------------

    @property
    def pending_webhooks(self) -> list[dict[str, Any]]:
        """Bodies the next `deliver_webhooks()` would POST (retries included)."""
        return self.hooks.pending

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        return self.hooks.attempts

    def redeliver(self, msg_id: str | None = None) -> int:
        """Queue a duplicate of the last delivered batch (or the one holding `msg_id`)."""
        return self.hooks.redeliver(msg_id)

    async def deliver_webhooks(self, *, max_posts: int = 1000) -> DeliveryReport:
        """POST every due batch once; a failure is retried `hook_retry_delay` later.

        Without `guaranteedHooks` a failed batch is dropped (spec 1.6); its messages stay
        in `/messages` for the gateway's gap refill. Items queued while posting (the
        gateway sending from inside its webhook handler) go out in the same call.
        """
        self.tick()
        return await self.hooks.deliver(self.http, max_posts=max_posts)

    async def deliver_until_idle(self, *, max_rounds: int = 25) -> DeliveryReport:
        """Deliver, jumping a ManualClock to each retry time: retries without waiting."""
        total = DeliveryReport()
        for _ in range(max_rounds):
            total = total.merge(await self.deliver_webhooks())
            due = self.hooks.next_due()
            if due is None:
                break
            if due > self.clock():
                if not isinstance(self.clock, ManualClock):
                    break
                self.clock.set(due)
        return total

    def webhook_status(self, msg_id: str) -> list[dict[str, Any]]:
        return self.hooks.webhook_status(msg_id)
