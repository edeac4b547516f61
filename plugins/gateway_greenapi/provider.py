"""`GreenApiProvider`: a WhatsApp number at GREEN-API as a gateway channel (spec section 2).

Inbound: webhooks (`Authorization` carries the instance's `webhookUrlToken`) or polling
`receiveNotification`, parsed by `notifications.py`. Outbound: `sendMessage`,
`sendFileByUrl`, `sendLocation`, `sendContact` planned by `outbound.py`. Account state:
`stateInstanceChanged` plus polling `getStateInstance`, since that webhook can go missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson

from gateway import (
    AccountState,
    AccountStatus,
    BadRequest,
    Capabilities,
    ChannelProvider,
    ConfigError,
    ConfigProblem,
    DeliveryError,
    DeliveryStatus,
    Edit,
    InboundEvent,
    InstanceContext,
    Landing,
    Message,
    Outcome,
    Outgoing,
    PermanentError,
    Sent,
    StatusNotice,
    Unauthorized,
    WebhookRequest,
    WebhookResult,
    send_each,
)
from gateway_greenapi import config as settings
from gateway_greenapi import outbound
from gateway_greenapi.avatars import Avatars
from gateway_greenapi.chats import chat_id_for
from gateway_greenapi.client import GreenClient
from gateway_greenapi.landed import PROGRESS, Landings
from gateway_greenapi.loops import NotificationReceiver, StateWatcher
from gateway_greenapi.notifications import Options, Unparsable, parse_notification
from gateway_greenapi.pacing import Pacer
from gateway_greenapi.refill import Refiller

log = logging.getLogger("gateway_greenapi")

#: Notifications the gateway reads; GREEN's defaults for a new instance are all "no".
NOTIFICATION_SETTINGS: dict[str, str] = {
    "incomingWebhook": "yes",
    "outgoingWebhook": "yes",
    "outgoingMessageWebhook": "yes",
    "outgoingAPIMessageWebhook": "yes",
    "stateWebhook": "yes",
    "incomingCallWebhook": "yes",
    "pollMessageWebhook": "yes",
    "editedMessageWebhook": "yes",
    "deletedMessageWebhook": "yes",
}
#: How long the parts already sent of an unfinished multi-part message are remembered.
PROGRESS_TTL_SECONDS = 7 * 86_400.0
_PROGRESS = PROGRESS
# GREEN shows a sent message in its journal up to 2 minutes late, and a send may run for
# the gateway's read timeout (30 s): only then is it asked whether a send landed.
SETTLE_SECONDS = 150.0
#: States after which the journals may hold messages no notification brought.
_AWAY = frozenset(
    {
        AccountStatus.NEEDS_QR,
        AccountStatus.DISCONNECTED,
        AccountStatus.BANNED,
        AccountStatus.UNPAID,
        AccountStatus.ERROR,
    }
)


class GreenApiProvider(ChannelProvider):
    """One GREEN-API instance (`idInstance`) as a channel."""

    name: ClassVar[str] = "greenapi"
    description: ClassVar[str] = "WhatsApp through GREEN-API (green-api.com)"
    required_settings: ClassVar[Mapping[str, str]] = settings.REQUIRED
    optional_settings: ClassVar[Mapping[str, Any]] = settings.OPTIONAL
    secret_settings: ClassVar[frozenset[str]] = settings.SECRETS

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        found = settings.problems(self.config)
        if found:
            where = f"channels.{self.instance}"
            raise ConfigError([ConfigProblem(f"{where}.{k}", m, f) for k, m, f in found])
        self.green = settings.GreenConfig.from_mapping(self.config)
        self.capabilities = Capabilities(
            quotes=True,
            # editMessage / deleteMessage: text messages, within WhatsApp's own limits.
            edits=True,
            deletes=True,
            read_receipts=True,
            groups=self.green.groups,
            max_text_length=outbound.MAX_TEXT,
            max_file_size=100 * 1024 * 1024,
            max_batch=1,
            idempotent_sends=False,
            # A send whose answer was lost is looked for in the queue and the journal, once
            # the journal can show it (see landed.py).
            finds_sent=True,
            settle_seconds=SETTLE_SECONDS,
            # "read" statuses from the CRM become readChat: the customer sees blue ticks.
            wants_statuses=True,
            # The journals keep what the instance received: linking may import it.
            history=True,
        )
        self.client = GreenClient(context.http, self.green)
        self.avatars = Avatars(self.client) if self.green.avatars else None
        self.landings = Landings(
            self.client, context.state, context.hub, context.name, groups=self.green.groups
        )
        self.options = Options(
            id_instance=self.green.id_instance,
            groups=self.green.groups,
            mirror_phone_messages=self.green.mirror_phone_messages,
        )
        self.pacer = Pacer(self.green.messages_per_second)
        self.watcher = StateWatcher(
            self.client, self._emit, self.green.id_instance, self.green.state_poll_seconds
        )
        self.receiver = NotificationReceiver(
            self.client,
            self._emit,
            self.options,
            wait_seconds=self.green.receive_timeout,
            idle_seconds=self.green.poll_idle_seconds,
        )
        self.refiller = Refiller(
            instance=self.instance,
            client=self.client,
            options=self.options,
            state=context.state,
            hub=context.hub,
            pacer=self.pacer,
            max_hours=self.green.refill_max_hours,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def validate_settings(cls, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return settings.problems(config)

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._forget_old_progress()
            if self.green.set_webhook:
                await self.configure()
        finally:
            # Even when GREEN-API refused the settings, polling shows what the account does.
            self._start_tasks()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wanted_settings(self) -> dict[str, str]:
        """What `setSettings` must say for this instance to reach the gateway."""
        wanted = dict(NOTIFICATION_SETTINGS)
        if self.green.receive == "webhook":
            wanted["webhookUrl"] = self.context.hub.webhook_url(self.instance)
            wanted["webhookUrlToken"] = self.green.webhook_token
        else:
            # receiveNotification works only while no webhook URL is set (spec 2.5).
            wanted["webhookUrl"] = ""
        return wanted

    async def configure(self) -> bool:
        """Point the instance at the gateway; True if `setSettings` was needed.

        `setSettings` reboots the instance, so it is called only when a setting differs.
        """
        wanted = self.wanted_settings()
        current = await self.client.get_settings()
        if all(current.get(key) == value for key, value in wanted.items()):
            return False
        await self.client.set_settings(wanted)
        log.info("GREEN-API instance %s: settings updated", self.green.id_instance)
        return True

    def _start_tasks(self) -> None:
        if self._tasks:
            return
        if self.green.state_poll_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self.watcher.run(), name=f"greenapi-state:{self.instance}")
            )
        if self.green.receive == "polling":
            self._tasks.append(
                asyncio.create_task(self.receiver.run(), name=f"greenapi-receive:{self.instance}")
            )
        if self.green.refill_on_start:
            self._tasks.append(
                asyncio.create_task(self.refiller.run(), name=f"greenapi-refill:{self.instance}")
            )

    async def _emit(self, events: Sequence[InboundEvent]) -> None:
        self._saw(events)
        await self.context.hub.emit(self.instance, await self._with_avatars(events))

    async def _with_avatars(self, events: Sequence[InboundEvent]) -> list[InboundEvent]:
        return list(events) if self.avatars is None else await self.avatars.attach(events)

    def _saw(self, events: Sequence[InboundEvent]) -> None:
        for inbound in events:
            if isinstance(inbound.event, AccountState):
                self.watcher.saw(inbound.event)
                self._connection(inbound.event.status)

    def _connection(self, status: AccountStatus) -> None:
        """Track whether the number is connected; back from away, refill the gap."""
        if status in _AWAY:
            self.refiller.connected = False
        elif status is AccountStatus.CONNECTED and not self.refiller.connected:
            self.refiller.connected = True
            if self.green.refill_on_start and self._tasks:
                self._tasks = [t for t in self._tasks if not t.done()]
                task = self.refiller.refill_retrying()
                self._tasks.append(
                    asyncio.create_task(task, name=f"greenapi-refill:{self.instance}:back")
                )

    async def history(self, since: float) -> list[InboundEvent]:
        """The messages of every chat since `since`, oldest first, from the journals
        (`lastIncomingMessages`; `lastOutgoingMessages` too with mirror_phone_messages)."""
        return await self.refiller.history(since)

    # inbound ---------------------------------------------------------------------------
    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        self._authenticate(request)
        if request.method != "POST":
            raise BadRequest("GREEN-API webhooks are POSTed", status=405)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        try:
            events = parse_notification(body, self.options)
        except Unparsable as exc:
            raise BadRequest(str(exc), status=exc.status) from None
        self._saw(events)
        return WebhookResult(events=await self._with_avatars(events))

    def _authenticate(self, request: WebhookRequest) -> None:
        """`Authorization: Bearer <webhookUrlToken>` or the bare token, in constant time."""
        token = self.green.webhook_token.encode()
        if not token:
            raise Unauthorized(
                "this instance takes no webhooks: set webhook_token to receive them", status=403
            )
        given = request.headers.get("authorization", "").strip()
        if not given:
            raise Unauthorized("missing Authorization header with the webhook token")
        if given[:7].lower() == "bearer ":
            given = given[7:].strip()
        if not hmac.compare_digest(given.encode(), token):
            raise Unauthorized("wrong webhook token", status=403)

    # outbound --------------------------------------------------------------------------
    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return await send_each(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> Outcome:
        try:
            chat_id = chat_id_for(item.event.conversation_id, groups=self.green.groups)
            if not isinstance(item.event, Message):
                return await self._change(item, chat_id)
            parts = outbound.plan(item.event, item.quoted_target_id)
            ids = await self._send_parts(item.job_id, chat_id, parts)
        except DeliveryError as exc:
            return exc
        if self.green.read_on_reply:
            await self._read_on_reply(chat_id)
        extra: dict[str, Any] = {"chatId": chat_id}
        if len(ids) > 1:
            extra["idMessages"] = ids
        # The last part stands for the message: once it is delivered or read, all are.
        return Sent(native_id=ids[-1], extra=extra)

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        """Look for sends whose answer was lost: see `landed.py`."""
        return await self.landings.find(batch)

    async def _change(self, item: Outgoing, chat_id: str) -> Outcome:
        """An operator's edit or delete of a message the API sent (`editMessage`,
        `deleteMessage`). WhatsApp applies an edit within 15 minutes only; GREEN still
        answers 200 after that, so a late edit is not reported as failed."""
        target = item.target_native_id
        if not target:
            raise PermanentError(
                f"no WhatsApp id for the message to {item.event.kind}", code="UNKNOWN_MESSAGE"
            )
        await self.pacer.wait()
        if isinstance(item.event, Edit):
            await self.client.edit(chat_id, target, item.event.text)
        else:
            await self.client.delete(chat_id, target)
        return Sent(native_id=target, extra={"chatId": chat_id})

    async def _read_on_reply(self, chat_id: str) -> None:
        """The operator answered: the customer's messages in that chat are read
        (`readChat` without an id marks them all). A courtesy: failing it fails nothing."""
        try:
            await self.client.read_chat(chat_id)
        except DeliveryError as exc:
            log.info("%s: readChat after a reply in %s failed: %s", self.instance, chat_id, exc)

    async def _send_parts(self, job_id: int, chat_id: str, parts: list[outbound.Part]) -> list[str]:
        """Send `parts` in order, skipping those a previous attempt of the job already sent."""
        key = f"{_PROGRESS}{job_id}"
        done: list[str] = []
        if len(parts) > 1:
            saved = await self.context.state.get(key)
            if isinstance(saved, dict):
                done = [str(i) for i in saved.get("ids", [])][: len(parts)]
        for part in parts[len(done) :]:
            await self.pacer.wait()
            done.append(await self.client.send(part.method, {"chatId": chat_id, **part.payload}))
            if len(done) < len(parts):
                await self.context.state.put(key, {"ids": done, "at": time.time()})
        if len(parts) > 1:
            await self.context.state.delete(key)
        return done

    async def _forget_old_progress(self) -> None:
        with contextlib.suppress(Exception):
            limit = time.time() - PROGRESS_TTL_SECONDS
            for key, value in await self.context.state.items(_PROGRESS):
                if not isinstance(value, dict) or float(value.get("at", 0)) < limit:
                    await self.context.state.delete(key)

    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        """An operator read the customer's message: mark it read in WhatsApp (`readChat`)."""
        outcomes: list[Outcome] = []
        for notice in notices:
            update = notice.update
            if update.status is not DeliveryStatus.READ or not update.conversation_id:
                outcomes.append(None)
                continue
            try:
                await self.client.read_chat(update.conversation_id, update.native_id)
            except DeliveryError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    # account ---------------------------------------------------------------------------
    def conversation_for_phone(self, phone: str) -> str:
        # Webhooks name a person's chat `<digits>@c.us`: the CRM's chat must match it.
        return f"{phone}@c.us"

    async def account_state(self) -> AccountState:
        return await self.watcher.fetch()
