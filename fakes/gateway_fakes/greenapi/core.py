"""`FakeGreenApi`: one GREEN-API WhatsApp instance, its simulation API and its queue."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from starlette.applications import Starlette

from gateway.testing.fake_common import (
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
    magic_of,
    qr_png,
    to_chat_id,
)
from gateway.testing.fake_delivery import (
    DeliveryReport,
)

from .customers import CustomerSide
from .incoming import IncomingJournal
from .messages import (
    error_body,
    instance_data,
    notification,
    quota_body,
    quota_data,
    sender_data,
)
from .model import (
    MESSAGE_SETTING,
    STATE_ALIASES,
    STATES,
    STATUSES,
    UNSTOPPABLE_STATUSES,
    WEBHOOK_SETTING,
    GreenSent,
    GreenSettings,
    Notification,
)
from .queue import NotificationQueue

# Magic recipients that end in a status instead of a delivery (spec 2.4, 2.7).
FAILING = {
    Magic.NO_ACCOUNT: ("noAccount", None),
    Magic.FAILED: ("failed", "fake: the message could not be delivered (magic number)"),
    Magic.NOT_IN_GROUP: ("notInGroup", "fake: the account is not a participant of the group"),
    Magic.YELLOW_CARD: ("yellowCard", "fake: sending suspended for spam; reboot the instance"),
}


#: WhatsApp applies an edit within 15 minutes of sending (GREEN-API's EditMessage page).
EDIT_WINDOW_SECONDS = 15 * 60.0


class FakeGreenApi(CustomerSide):
    """A GREEN-API instance at `/waInstance{idInstance}/{method}/{apiTokenInstance}`.

    Notifications go to one FIFO queue; with `webhookUrl` set, `await deliver_webhooks()`
    pushes it head first, otherwise the gateway polls `receiveNotification`.
    """

    #: Seconds before a sent message shows in `lastOutgoingMessages` (GREEN: up to 120).
    journal_delay: float = 0.0

    def __init__(
        self,
        id_instance: str = "1101000001",
        api_token: str = "fake0green0api0token",  # noqa: S107 - a fake credential for tests
        *,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        host: str = "https://api.green-api.test",
        media_host: str | None = None,
        me: str = "79876543210",
        me_name: str = "Shop",
        state: str = "authorized",
        webhook_url: str = "",
        webhook_token: str = "",
        settings: Mapping[str, Any] | None = None,
        retry_pause: float = 60.0,
        webhook_timeout: float = 180.0,
        retention: float = 86_400.0,
        restart_seconds: float = 0.0,
        qr_refresh: float = 20.0,
        emulate_send_delay: bool = False,
        auto_statuses: Sequence[str] = (),
        quote_style: Literal["object", "legacy"] = "object",
        auth_style: Literal["bearer", "raw"] = "bearer",
        blocked_bug: bool = False,
    ) -> None:
        self.id_instance = str(id_instance)
        self.api_token = api_token
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.http = http
        self.host = host.rstrip("/")
        self.media_host = (media_host or host).rstrip("/")
        self.me_id = to_chat_id(me)
        self.me_name = me_name
        self.settings = GreenSettings(wid=self.me_id)
        self.settings.update(
            {"webhookUrl": webhook_url, "webhookUrlToken": webhook_token, **(settings or {})}
        )
        self.restart_seconds = restart_seconds
        self.qr_refresh = qr_refresh
        self.emulate_send_delay = emulate_send_delay
        self.auto_statuses = tuple(auto_statuses)
        self.quote_style = quote_style
        self.blocked_bug = blocked_bug

        self.ids = IdGen(f"green:{self.id_instance}")
        self.faults = Faults()
        self.media = MediaStore(self.media_host)
        self.notifications = NotificationQueue(
            self.clock,
            retry_pause=retry_pause,
            timeout=webhook_timeout,
            retention=retention,
            auth_style=auth_style,
        )
        self.calls: list[CallRecord] = []
        #: lastIncomingMessages, and getChatHistory's incoming half (incoming.py).
        self.incoming = IncomingJournal()
        self.sent: list[GreenSent] = []
        self.phone_sent: list[GreenSent] = []
        self.suppressed: list[dict[str, Any]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        #: `readChat` calls: (chatId, idMessage or None for the whole chat).
        self.reads: list[tuple[str, str | None]] = []
        #: `editMessage` calls past WhatsApp's 15 minutes: answered 200, not applied.
        self.late_edits: list[str] = []
        self.names: dict[str, str] = {}
        #: Profile photos by chat (`set_avatar`), and the chats `getAvatar` was asked about.
        self.avatars: dict[str, str] = {}
        self.avatar_calls: list[str] = []

        self.state = "notAuthorized"
        self._linked = False
        self._after_start = "notAuthorized"
        self._starting_until = 0.0
        self._qr_since = self.clock()
        self._qr_base = 0
        self._backlog: list[dict[str, Any]] = []
        self._last_send_at = -math.inf
        self.last_queue_clear = -math.inf
        self._app: Starlette | None = None
        # The starting state is a given, not an event: nothing is announced for it.
        self.state = STATE_ALIASES.get(state, state)
        if self.state not in STATES:
            raise ValueError(f"unknown stateInstance {state!r}; one of {STATES}")
        self._linked = self.state not in ("notAuthorized", "starting")

    # -- addresses -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.host

    @property
    def media_url(self) -> str:
        return self.media_host

    @property
    def base_url(self) -> str:
        return self.host

    def url(self, method: str, *extra: str | int) -> str:
        tail = "".join(f"/{e}" for e in extra)
        return f"{self.host}/waInstance{self.id_instance}/{method}/{self.api_token}{tail}"

    @property
    def app(self) -> Starlette:
        if self._app is None:
            self._app = self.make_app()
        return self._app

    def make_app(self, *, deliver_every: float | None = None) -> Starlette:
        from .api import build_app

        return build_app(self, deliver_every=deliver_every)

    # -- time and state --------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def advance(self, seconds: float) -> None:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs the fake to run on a ManualClock")
        self.clock.advance(seconds)
        self.tick()

    def tick(self) -> None:
        """Apply everything that time alone changes: restarts, paced sends, 24 h expiry."""
        if self.state == "starting" and self.clock() >= self._starting_until:
            self._enter(self._after_start)
        self._drain()
        self.notifications.expire()

    @property
    def wid(self) -> str:
        return "" if self.state == "notAuthorized" else self.me_id

    def set_state(self, state: str) -> None:
        """Force `stateInstance`; emits stateInstanceChanged like the real instance."""
        state = STATE_ALIASES.get(state, state)
        if state not in STATES:
            raise ValueError(f"unknown stateInstance {state!r}; one of {STATES}")
        if state == "authorized":
            self._linked = True
        elif state == "notAuthorized":
            self._linked = False
        self._enter(state)

    def scan_qr(self) -> None:
        if self.state != "notAuthorized":
            raise ValueError(f"no QR code to scan while {self.state!r}")
        self.set_state("authorized")

    def reboot(self) -> None:
        """`starting` for `restart_seconds`, then back (setSettings and reboot do this)."""
        previous = self.state if self.state != "starting" else self._after_start
        if previous == "blocked":
            self._after_start = "blocked"
        else:
            self._after_start = "authorized" if self._linked else "notAuthorized"
        self._starting_until = self.clock() + self.restart_seconds
        self._enter("starting")

    def logout(self) -> None:
        self._linked = False
        self._enter("notAuthorized")

    def _enter(self, state: str) -> None:
        previous, self.state = self.state, state
        if previous == state:
            return
        if state == "notAuthorized":
            self._qr_base = self.qr_version + 1
            self._qr_since = self.clock()
        # GREEN forum #204: notAuthorized may never be announced after blocked.
        if not (self.blocked_bug and previous == "blocked" and state == "notAuthorized"):
            self._emit(self._note("stateInstanceChanged", stateInstance=state))
        if state == "authorized":
            backlog, self._backlog = self._backlog, []
            for body in backlog:
                self._emit(body)
            self._drain()

    @property
    def qr_version(self) -> int:
        return self._qr_base + math.floor((self.clock() - self._qr_since) / self.qr_refresh)

    def qr_png(self) -> bytes:
        return qr_png(f"green:{self.id_instance}:qr:{self.qr_version}")

    def qr_base64(self) -> str:
        return base64.b64encode(self.qr_png()).decode()

    # -- notifications ---------------------------------------------------------------------

    def _emit(self, body: dict[str, Any]) -> Notification | None:
        """Queue a notification unless the instance settings switch it off (spec 2.3)."""
        kind = str(body["typeWebhook"])
        setting = WEBHOOK_SETTING.get(kind)
        allowed = setting is None or self.settings.on(setting)
        if kind == "outgoingMessageStatus" and body["status"] in UNSTOPPABLE_STATUSES:
            allowed = True
        extra = MESSAGE_SETTING.get(str(body.get("messageData", {}).get("typeMessage")))
        if extra is not None:
            allowed = allowed and self.settings.on(extra)
        if not allowed:
            self.suppressed.append(body)
            return None
        self.incoming.record(body)
        return self.notifications.push(body)

    def _note(self, type_webhook: str, **fields: Any) -> dict[str, Any]:
        return notification(
            type_webhook, instance_data(self.id_instance, self.wid), self.now(), **fields
        )

    def _envelope(
        self, kind: str, id_message: str, sender: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return self._note(kind, idMessage=id_message, senderData=sender, messageData=data)

    @property
    def pending_webhooks(self) -> list[dict[str, Any]]:
        self.tick()
        return [n.body for n in self.notifications.items]

    async def deliver_webhooks(self, *, max_posts: int = 1000) -> DeliveryReport:
        """POST queued notifications one by one, in order, to `webhookUrl`.

        Stops at the first failure (non-200, timeout, network error): that notification
        stays at the head and is retried `retry_pause` seconds later on the clock.
        """
        self.tick()
        return await self.notifications.deliver(
            self.http,
            self.settings.webhookUrl,
            self.settings.webhookUrlToken,
            max_posts=max_posts,
        )

    async def deliver_until_idle(self, *, max_rounds: int = 25) -> DeliveryReport:
        """Deliver, jumping a ManualClock to each retry: head-of-line retries without waits."""
        total = DeliveryReport()
        for _ in range(max_rounds):
            total = total.merge(await self.deliver_webhooks())
            if not self.settings.webhookUrl or not self.notifications.jump_to_next_due():
                break
        return total

    def redeliver(self, id_message: str | None = None, *, type_webhook: str | None = None) -> int:
        """Queue a duplicate of a delivered notification; returns its new receiptId."""
        return self.notifications.redeliver(id_message, type_webhook)

    def quota_exceeded(self, used: int = 3, total: int = 3) -> None:
        """Developer-plan `quotaExceeded` notification (spec 2.4)."""
        self._emit(self._note("quotaExceeded", quotaData=quota_data(used, total)))

    # -- outbound (called by the HTTP layer) -----------------------------------------------

    def send(
        self,
        method: str,
        chat_id: str,
        params: Mapping[str, Any],
        data: dict[str, Any],
        *,
        text: str = "",
        url_file: str | None = None,
    ) -> Result:
        magic = magic_of(chat_id)
        if magic is Magic.RATE_LIMITED:
            body = error_body(429, "Too Many Requests", method, self.clock)
            raise FakeHttpError(429, body, {"Retry-After": "1"})
        if magic is Magic.SERVER_ERROR:
            raise FakeHttpError(500, error_body(500, "Internal Server Error", method, self.clock))
        if magic is Magic.QUOTA:
            raise FakeHttpError(466, quota_body(method))
        if magic is Magic.TIMEOUT:
            raise FakeTimeout(after_effect=False)
        quoted = str(params.get("quotedMessageId") or "") or None
        data = self._quote(data, text, quoted, self.quote_style == "legacy")
        sent = GreenSent(
            self.ids.hex(20, "BAE5"),
            method,
            chat_id,
            data["typeMessage"],
            data,
            dict(params),
            self.clock(),
            quoted,
            url_file,
        )
        if self.emulate_send_delay:
            delay = self.settings.delaySendMessagesMilliseconds / 1000
            sent.send_at = max(self.clock(), self._last_send_at + delay)
            self._last_send_at = sent.send_at
        self.sent.append(sent)
        self.messages[sent.id_message] = {
            "chatId": chat_id,
            "sender": self.me_id,
            "messageData": data,
        }
        self._drain()
        response: dict[str, Any] = {"idMessage": sent.id_message}
        if url_file is not None and method == "sendFileByUpload":
            response["urlFile"] = url_file
        if magic is Magic.TIMEOUT_AFTER_EFFECT:
            raise FakeTimeout(after_effect=True)
        return Result(response)

    def sent_message(self, chat_id: str, id_message: str) -> GreenSent:
        for sent in self.sent:
            if sent.id_message == id_message and sent.chat_id == chat_id:
                return sent
        raise FakeHttpError(
            400,
            {
                "statusCode": 400,
                "message": f"Validation failed. Details: message {id_message}"
                f" of {chat_id} was not sent by this instance",
            },
        )

    def edit(self, chat_id: str, id_message: str, text: str) -> Result:
        """`editMessage`: text messages the API sent; WhatsApp ignores edits after 15 minutes,
        and GREEN still answers 200 with a new id."""
        sent = self.sent_message(chat_id, id_message)
        if sent.text is None or sent.deleted:
            raise FakeHttpError(
                400, {"statusCode": 400, "message": "Validation failed. Details: not a text"}
            )
        if self.clock() - sent.at > EDIT_WINDOW_SECONDS:
            self.late_edits.append(id_message)
        else:
            sent.edits.append(text)
        return Result({"idMessage": self.ids.hex(20, "BAE5")})

    def delete(self, chat_id: str, id_message: str) -> Result:
        """`deleteMessage` for everyone: 200 with an empty body."""
        self.sent_message(chat_id, id_message).deleted = True
        return Result(None, raw=b"")

    def _drain(self) -> None:
        """Send queued messages while authorized, paced by delaySendMessagesMilliseconds."""
        for sent in self.sent:
            if self.state != "authorized":
                return
            if sent.status != "queued":
                continue
            if self.emulate_send_delay and sent.send_at > self.clock():
                return
            self._dispatch(sent)

    def _dispatch(self, sent: GreenSent) -> None:
        sent.sent_at = self.clock()
        magic = magic_of(sent.chat_id)
        if magic is not None and magic in FAILING:
            status, description = FAILING[magic]
            self.emit_status(sent.id_message, status, description)
            if magic is Magic.YELLOW_CARD:
                self._enter("yellowCard")
            return
        who = sender_data(
            sent.chat_id, self.me_id, self.names.get(sent.chat_id, sent.chat_id), self.me_name
        )
        self._emit(
            self._envelope("outgoingAPIMessageReceived", sent.id_message, who, sent.message_data)
        )
        self.emit_status(sent.id_message, "sent")
        for status in self.auto_statuses:
            if magic is Magic.NEVER_DELIVERED:
                break
            self.emit_status(sent.id_message, status)

    def queued(self) -> list[GreenSent]:
        return [s for s in self.sent if s.status == "queued"]

    # -- statuses --------------------------------------------------------------------------

    def find_sent(self, id_message: str) -> GreenSent:
        for sent in (*self.sent, *self.phone_sent):
            if sent.id_message == id_message:
                return sent
        raise KeyError(f"no outgoing message {id_message!r}")

    def emit_status(self, id_message: str, status: str, description: str | None = None) -> None:
        """Queue an `outgoingMessageStatus` for a sent (or phone-typed) message."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        sent = self.find_sent(id_message)
        if sent.status == "queued" and status in ("delivered", "read"):
            raise ValueError(f"{id_message} is still queued: the instance is not authorized")
        sent.status = status
        sent.statuses.append(status)
        body = self._note(
            "outgoingMessageStatus",
            chatId=sent.chat_id,
            idMessage=id_message,
            status=status,
            sendByApi=sent.method != "phone",
        )
        if description:
            body["description"] = description
        self._emit(body)

    def mark_delivered(self, id_message: str) -> None:
        self.emit_status(id_message, "delivered")

    def mark_read(self, id_message: str) -> None:
        self.emit_status(id_message, "read")

    def mark_failed(self, id_message: str, description: str = "fake: delivery failed") -> None:
        self.emit_status(id_message, "failed", description)
