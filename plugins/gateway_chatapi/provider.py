"""`ChatApiChannel`: a WhatsApp number behind a Chat API instance, as a gateway channel.

Inbound: webhooks authenticated by a URL secret, every item its own event; after downtime the
gap is refilled from `/messages?lastMessageNumber=`. Outbound: one Chat API call per part of
a message, paced per instance. Account state from `/status` and `/qr_code`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from gateway import (
    AccountState,
    AccountStatus,
    BadRequest,
    Capabilities,
    ChannelProvider,
    ConfigError,
    ConfigProblem,
    DeliveryError,
    InboundEvent,
    InstanceContext,
    Landing,
    Message,
    Outcome,
    Outgoing,
    PermanentError,
    Sent,
    TemporaryError,
    WebhookRequest,
    WebhookResult,
    send_each,
    wait_event,
)
from gateway_chatapi.client import ChatApiClient
from gateway_chatapi.config import OPTIONAL, REQUIRED, SECRETS, ChatApiConfig, parse_config
from gateway_chatapi.convert import account_state
from gateway_chatapi.landed import Landings
from gateway_chatapi.outbound import plan_send
from gateway_chatapi.pacing import Pacer
from gateway_chatapi.webhooks import (
    ack_events,
    authenticate,
    decode,
    message_events,
    status_event,
)

log = logging.getLogger("gateway_chatapi")

CURSOR_KEY = "last_message_number"
# Refills re-read this many numbers below the cursor: numbers arrive out of order (the
# cursor itself may lag what was stored, see CURSOR_SAVE_SECONDS; dedupe drops repeats).
REFILL_OVERLAP = 100
# Webhooks store the cursor in the background, at most this often: it is not needed to
# answer a webhook (the refill after a restart re-reads from where it is, and dedupe drops
# what was stored already), so one commit per webhook for it would be wasted.
CURSOR_SAVE_SECONDS = 1.0
REFILL_PAGE = 100
REFILL_MAX_PAGES = 50
HISTORY_MAX_PAGES = 200
# What the gateway needs from the instance (spec 1.4). `ignoreOldMessages` is left alone:
# it would keep messages that waited on the phone out of the webhooks.
WEBHOOK_SETTINGS: dict[str, Any] = {
    "ackNotificationsOn": True,
    "guaranteedHooks": True,
    "statusNotificationsOn": True,
}
# How long an unknown `fromMe` echo waits for sends in flight before it counts as typed on
# the phone: Chat API may echo a send before answering it.
ECHO_WAIT_SECONDS = 10.0
# How often the id map is asked again meanwhile for a send of another process (the store
# has no way to wake this one): one indexed lookup per poll while such a send is out.
ECHO_POLL_SECONDS = 0.05
# How long after an attempt began Chat API may still take it: the gateway's read timeout
# (30 s) and a margin; only then is the queue or history asked whether it landed.
SETTLE_SECONDS = 60.0
_RECENT_SENDS = 5000


class ChatApiChannel(ChannelProvider):
    """One Chat API instance (`https://api.chat-api.com/instance{ID}` or a legacy host)."""

    name: ClassVar[str] = "chatapi"
    description: ClassVar[str] = "WhatsApp through Chat API (chat-api.com and compatible hosts)"
    required_settings: ClassVar[Mapping[str, str]] = REQUIRED
    optional_settings: ClassVar[Mapping[str, Any]] = OPTIONAL
    secret_settings: ClassVar[frozenset[str]] = SECRETS

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        config, problems = parse_config(context.config, fallback_id=context.name)
        if config is None:
            raise ConfigError(
                [ConfigProblem(f"channels.{context.name}.{k}", m, fix) for k, m, fix in problems]
            )
        self.settings: ChatApiConfig = config
        self.capabilities = Capabilities(
            quotes=True,
            edits=False,
            deletes=False,
            read_receipts=True,
            groups=config.groups,
            # Chat API documents no limit; WhatsApp itself takes 65,536 characters.
            max_text_length=65536,
            max_batch=1,
            idempotent_sends=False,
            # A send whose answer was lost is looked for in the queue and history.
            finds_sent=True,
            settle_seconds=SETTLE_SECONDS,
            # /messages keeps what the instance received: linking may import it.
            history=True,
        )
        self.client = ChatApiClient(context.http, config.base_url, config.token)
        self.landings = Landings(self.client, context.state, context.hub, context.name)
        self.pacer = Pacer(config.messages_per_second)
        #: The background part of `start()` (webhook retries, refill); tests may await it.
        self.startup_task: asyncio.Task[None] | None = None
        self._start_cursor: int | None = None
        # The highest cursor known to be stored, and the highest any webhook asked for.
        self._saved_cursor: int | None = None
        self._wanted_cursor: int | None = None
        self._cursor_saver: asyncio.Task[None] | None = None
        # Ids this process sent, until the core's id map has them (it commits after `send`).
        self._recent: dict[str, None] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def validate_settings(cls, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return parse_config(config)[1]

    # lifecycle -------------------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        return self.context.hub.webhook_url(self.instance, self.settings.webhook_secret)

    async def start(self) -> None:
        # Read before the webhook is pointed here: webhooks move the cursor from then on.
        stored = await self.context.state.get(CURSOR_KEY)
        self._start_cursor = int(stored) if isinstance(stored, int | float) else None
        self._saved_cursor = self._start_cursor
        configure_later = False
        if self.settings.set_webhook:
            try:
                await self.configure_webhook()
            except TemporaryError as exc:
                log.warning("%s: cannot set the webhook yet, retrying: %s", self.instance, exc)
                configure_later = True
            # A PermanentError (bad token, bad base_url) propagates: /readyz shows it.
        if configure_later or self.settings.refill_on_start:
            self.startup_task = asyncio.create_task(
                self._after_start(configure_later), name=f"chatapi:{self.instance}:start"
            )

    async def stop(self) -> None:
        if self.startup_task is not None:
            self.startup_task.cancel()
            await asyncio.gather(self.startup_task, return_exceptions=True)
            self.startup_task = None
        saver, self._cursor_saver = self._cursor_saver, None
        if saver is not None:
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)
        if self._wanted_cursor is not None:
            # What the webhooks asked for last, stored before the store closes.
            await self._advance_cursor(self._wanted_cursor)

    async def configure_webhook(self) -> None:
        """Point the instance's webhook at the gateway, with acks and retries on."""
        await self.client.update_settings({"webhookUrl": self.webhook_url, **WEBHOOK_SETTINGS})

    async def _after_start(self, configure: bool) -> None:
        try:
            if configure:
                await _retrying(self.configure_webhook, f"{self.instance}: setting the webhook")
            if self.settings.refill_on_start:
                await _retrying(self.refill, f"{self.instance}: refill", attempts=5)
        except Exception:
            log.exception("%s: start-up work failed", self.instance)

    # inbound ---------------------------------------------------------------------------
    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        authenticate(request, self.settings.webhook_secret)
        if request.method in ("GET", "HEAD"):
            return WebhookResult()  # someone checking that the URL answers
        if request.method != "POST":
            raise BadRequest("Chat API webhooks are POSTed", status=405)
        body = decode(request.body)
        expected = self.settings.instance_id
        given = body.instance_id or ""
        if given.isdigit() and expected.isdigit() and given != expected:
            raise BadRequest(
                f"this URL belongs to Chat API instance {expected}, not {given}: "
                "check that instance's webhookUrl",
                status=422,
            )
        events = await self._message_events(body.messages)
        events += ack_events(body.acks, instance_id=expected)
        if body.status is not None:
            events.append(status_event(body.status, instance_id=expected))
        return WebhookResult(events=events)

    async def _message_events(self, items: Sequence[Any]) -> list[InboundEvent]:
        parsed = await message_events(
            items,
            instance_id=self.settings.instance_id,
            groups=self.settings.groups,
            mirror_phone_messages=self.settings.mirror_phone_messages,
            is_own=self._is_own,
        )
        if parsed.highest is not None:
            self._cursor_later(parsed.highest)
        if self.settings.rehost_media:
            return [self._rehosted(event) for event in parsed.events]
        return parsed.events

    async def _is_own(self, message_id: str) -> bool:
        """Whether a `fromMe` message is the echo of something the gateway sent.

        An id not recorded yet may be a send still in flight: this process's own calls
        are awaited here; another process's (the delivery process of `[workers]
        delivery_process`) are seen in the store, and the id map is asked until they end.
        """
        if message_id in self._recent:
            return True
        if await self.context.hub.was_sent_by_gateway(self.instance, message_id):
            return True
        if self._in_flight:
            await wait_event(self._idle, ECHO_WAIT_SECONDS)
            return message_id in self._recent
        return await self._sent_elsewhere(message_id)

    async def _sent_elsewhere(self, message_id: str) -> bool:
        """Whether a send of another process, in flight now, is recorded as `message_id`
        within ECHO_WAIT_SECONDS; False at once when no send is in flight."""
        hub = self.context.hub
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ECHO_WAIT_SECONDS
        while True:
            # In flight first, then the id map: a send recorded after the lookup in
            # `_is_own` but before this answer (its job gone) is still found below.
            busy = await hub.sends_in_flight(self.instance)
            if message_id in self._recent:
                return True
            if await hub.was_sent_by_gateway(self.instance, message_id):
                return True
            if not busy or loop.time() >= deadline:
                return False
            await asyncio.sleep(ECHO_POLL_SECONDS)

    @staticmethod
    def _rehosted(event: InboundEvent) -> InboundEvent:
        """`event` with its files marked for the core to copy into the media store (at
        delivery, so a slow download never holds up the webhook)."""
        message = event.event
        if not isinstance(message, Message) or not message.attachments:
            return event
        marked = tuple(replace(a, rehost=True) for a in message.attachments)
        return replace(event, event=replace(message, attachments=marked))

    def _cursor_later(self, number: int) -> None:
        """Have `number` stored as the cursor soon, if it is higher (see
        CURSOR_SAVE_SECONDS); the webhook does not wait for it."""
        if self._saved_cursor is not None and number <= self._saved_cursor:
            return
        self._wanted_cursor = max(self._wanted_cursor or number, number)
        if self._cursor_saver is None or self._cursor_saver.done():
            self._cursor_saver = asyncio.create_task(self._save_cursor(), name="chatapi-cursor")

    async def _save_cursor(self) -> None:
        while (wanted := self._wanted_cursor) is not None and (
            self._saved_cursor is None or wanted > self._saved_cursor
        ):
            try:
                await self._advance_cursor(wanted)
            except Exception as exc:
                # Only a longer refill after a restart depends on it: tried again below.
                log.warning("%s: storing the message cursor failed: %s", self.instance, exc)
            await asyncio.sleep(CURSOR_SAVE_SECONDS)

    async def _advance_cursor(self, number: int) -> None:
        """Store `number` as the cursor if it is higher; it is stored when this returns.

        Concurrent webhooks share writes: whoever gets the lock stores the highest number
        wanted so far, and the callers queued behind it find theirs stored already. Taking
        the lock for every webhook would serialize them all on one commit each.
        """
        if self._saved_cursor is not None and number <= self._saved_cursor:
            return
        self._wanted_cursor = max(self._wanted_cursor or number, number)
        state = self.context.state
        async with state.lock(CURSOR_KEY):
            if self._saved_cursor is not None and number <= self._saved_cursor:
                return
            wanted = self._wanted_cursor
            if self._saved_cursor is None:
                current = await state.get(CURSOR_KEY)
                if isinstance(current, int | float) and current >= wanted:
                    self._saved_cursor = int(current)
                    return
            await state.put(CURSOR_KEY, wanted)
            self._saved_cursor = wanted

    async def refill(self) -> int:
        """Emit what arrived since the cursor read at start; returns how many were new.

        The first start only records where the history ends: importing an account's whole
        past would flood the CRM.
        """
        start = self._start_cursor
        if start is None:
            data = await self.client.messages(0, 1, last=True)
            numbers = [m.get("messageNumber") for m in data["messages"] if isinstance(m, dict)]
            last = max([n for n in numbers if isinstance(n, int)], default=0)
            await self._advance_cursor(last)
            self._start_cursor = last
            return 0
        after = max(0, start - REFILL_OVERLAP)
        new = 0
        for _ in range(REFILL_MAX_PAGES):
            data = await self.client.messages(after, REFILL_PAGE)
            items = data["messages"]
            highest = after
            events = await self._message_events(items)
            if events:
                new += sum(await self.context.hub.emit(self.instance, events))
            for item in items:
                number = item.get("messageNumber") if isinstance(item, dict) else None
                if isinstance(number, int) and number > highest:
                    highest = number
            if len(items) < REFILL_PAGE or highest <= after:
                break
            after = highest
        else:
            log.warning("%s: refill stopped after %d pages", self.instance, REFILL_MAX_PAGES)
        if new:
            log.info("%s: refilled %d messages missed while away", self.instance, new)
        return new

    async def history(self, since: float) -> list[InboundEvent]:
        """What `/messages?min_time=` holds since `since`, page by page, oldest first, as
        the events of its webhooks (the same keys; the gateway's own sends left out)."""
        events: list[InboundEvent] = []
        after = 0
        for _ in range(HISTORY_MAX_PAGES):
            data = await self.client.messages(after, REFILL_PAGE, min_time=int(since))
            items = data["messages"]
            events += await self._message_events(items)
            numbers = [i.get("messageNumber") for i in items if isinstance(i, dict)]
            highest = max([n for n in numbers if isinstance(n, int)], default=after)
            if len(items) < REFILL_PAGE or highest <= after:
                break
            after = highest
        else:
            log.warning("%s: history stopped after %d pages", self.instance, HISTORY_MAX_PAGES)
        # Numbered in arrival order; the customer's own times order them for the CRM.
        return sorted(events, key=_event_time)

    # outbound --------------------------------------------------------------------------
    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return await send_each(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> Sent:
        parts = plan_send(item)
        state = self.context.state
        # A message in several calls remembers the parts already sent, so a retry after a
        # failure halfway does not send the first ones twice.
        progress_key = f"progress:{item.job_id}"
        done: list[str] = []
        if len(parts) > 1:
            stored = await state.get(progress_key)
            done = [str(x) for x in stored] if isinstance(stored, list) else []
        for index, part in enumerate(parts):
            if index < len(done):
                continue
            if not await self.pacer.wait():
                raise TemporaryError(
                    "holding sends to messages_per_second", retry_after=self.pacer.retry_in()
                )
            self._in_flight += 1
            self._idle.clear()
            try:
                result = await self.client.send(part.method, part.body)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
            # Chat API always answers with the id [V]; without one, nothing can refer to it.
            sent_id = result.id or f"chatapi-unknown:{item.job_id}:{index}"
            self._remember(sent_id)
            done.append(sent_id)
            if len(parts) > 1:
                await state.put(progress_key, done)
        if len(parts) > 1:
            await state.delete(progress_key)
        if self.settings.read_on_reply:
            await self._read_on_reply(parts[0].body)
        return Sent(native_id=done[0], extra={"parts": done[1:]} if len(done) > 1 else {})

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        """Look for sends whose answer was lost: see `landed.py`."""
        return await self.landings.find(batch)

    async def _read_on_reply(self, body: dict[str, Any]) -> None:
        """The operator answered: the customer's chat is read (`/readChat` with the same
        `chatId` or `phone` as the send). A courtesy: failing it fails nothing."""
        address: dict[str, Any] = {k: body[k] for k in ("chatId", "phone") if k in body}
        try:
            await self.client.call("readChat", json=address)
        except DeliveryError as exc:
            log.info("%s: readChat after a reply failed: %s", self.instance, exc)

    def _remember(self, message_id: str) -> None:
        self._recent[message_id] = None
        if len(self._recent) > _RECENT_SENDS:
            del self._recent[next(iter(self._recent))]

    # account ---------------------------------------------------------------------------
    def conversation_for_phone(self, phone: str) -> str:
        # Webhooks name a person's chat `<digits>@c.us`: the CRM's chat must match it.
        return f"{phone}@c.us"

    async def account_state(self) -> AccountState:
        try:
            data = await self.client.status()
        except PermanentError as exc:
            return AccountState(AccountStatus.ERROR, detail=str(exc))
        qr = None
        if str(data.get("accountStatus", "")).lower() == "got qr code":
            try:
                png = await self.client.qr_code()
            except DeliveryError as exc:
                log.info("%s: no QR image (%s); using the one in /status", self.instance, exc)
            else:
                qr = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return account_state(data, qr)


def _event_time(inbound: InboundEvent) -> float:
    stamp = getattr(inbound.event, "timestamp", None)
    return float(stamp) if isinstance(stamp, int | float) else 0.0


async def _retrying(
    action: Callable[[], Awaitable[object]], what: str, *, attempts: int | None = None
) -> None:
    """Run `action` until it works, backing off; a permanent error ends it with a log line."""
    delay = 1.0
    tried = 0
    while True:
        tried += 1
        try:
            await action()
            return
        except PermanentError as exc:
            log.error("%s failed: %s", what, exc)
            return
        except TemporaryError as exc:
            if attempts is not None and tried >= attempts:
                log.error("%s failed %d times, giving up: %s", what, tried, exc)
                return
            log.warning("%s failed, retrying in %.0f s: %s", what, delay, exc)
        await asyncio.sleep(delay)
        delay = min(60.0, delay * 2)
