"""The instance's background work: state polling and, in polling mode, receiving.

Both loops run as tasks from `start()` to `stop()`, survive any error (logged, then retried
with backoff) and wait with an injectable `sleep`, so tests step them without real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from gateway import AccountState, AccountStatus, DeliveryError, InboundEvent, PermanentError
from gateway_greenapi.client import GreenClient
from gateway_greenapi.notifications import Options, Unparsable, parse_notification
from gateway_greenapi.state import account_state, qr_data_url

log = logging.getLogger("gateway_greenapi")

Emit = Callable[[Sequence[InboundEvent]], Awaitable[Any]]
Sleep = Callable[[float], Awaitable[None]]

#: GREEN renews the QR code every 20 s; while one is shown, poll at that pace.
QR_REFRESH_SECONDS = 20.0
#: Temporary failures in a row before the state reads as an error.
FAILURES_BEFORE_ERROR = 3
MAX_BACKOFF_SECONDS = 60.0


class StateWatcher:
    """Polls `getStateInstance` (and `qr` while unlinked); emits `AccountState` on change."""

    def __init__(
        self,
        client: GreenClient,
        emit: Emit,
        id_instance: str,
        interval: float,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.emit = emit
        self.id_instance = id_instance
        self.interval = interval
        self.sleep = sleep
        self.clock = clock
        self.last: AccountState | None = None
        self.failures = 0
        #: The authorized account's number (`getWaSettings`), asked once per login.
        self.phone: str | None = None

    async def fetch(self) -> AccountState:
        """The state now; raises `DeliveryError` when GREEN-API cannot tell."""
        state = await self.client.get_state()
        qr = None
        if state == "notAuthorized":
            self.phone = None  # a new scan may link another phone
            try:
                qr = qr_data_url(await self.client.qr())
            except DeliveryError as exc:
                # The state is worth reporting without its picture.
                log.warning("GREEN-API instance %s: no QR code: %s", self.id_instance, exc)
        elif state == "authorized" and self.phone is None:
            await self._learn_phone()
        return replace(account_state(state, qr), phone=self.phone)

    async def _learn_phone(self) -> None:
        try:
            phone = (await self.client.wa_settings()).get("phone")
        except DeliveryError as exc:
            log.info("GREEN-API instance %s: number unknown: %s", self.id_instance, exc)
            return
        digits = "".join(ch for ch in str(phone or "") if ch.isdigit())
        self.phone = digits or None

    async def poll_once(self) -> AccountState | None:
        """Poll and emit if the state changed; the state emitted, or None."""
        try:
            state = await self.fetch()
            self.failures = 0
        except DeliveryError as exc:
            self.failures += 1
            log.warning("GREEN-API instance %s: state unknown: %s", self.id_instance, exc)
            if not isinstance(exc, PermanentError) and self.failures < FAILURES_BEFORE_ERROR:
                return None
            state = AccountState(AccountStatus.ERROR, detail=f"getStateInstance failed: {exc}")
        if state == self.last:
            return None
        key = f"greenapi:{self.id_instance}:state:{state.status.value}:polled:{self.clock():.3f}"
        await self.emit([InboundEvent(key, state)])
        self.last = state
        return state

    def saw(self, state: AccountState) -> None:
        """A state that arrived by notification: the poll reports only what differs."""
        self.last = state

    def pause(self) -> float:
        if self.last is not None and self.last.status is AccountStatus.NEEDS_QR:
            return min(self.interval, QR_REFRESH_SECONDS)
        return self.interval

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("GREEN-API instance %s: state poll failed", self.id_instance)
            await self.sleep(self.pause())


class NotificationReceiver:
    """`receiveNotification` -> persist -> `deleteNotification`, at least once (spec 2.5).

    A notification is deleted only after `emit` committed its events; if the gateway dies in
    between, GREEN hands it out again and the dedupe key makes the second time harmless.
    """

    def __init__(
        self,
        client: GreenClient,
        emit: Emit,
        options: Options,
        *,
        wait_seconds: int,
        idle_seconds: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.emit = emit
        self.options = options
        self.wait_seconds = wait_seconds
        self.idle_seconds = idle_seconds
        self.sleep = sleep
        self.failures = 0

    async def receive_once(self) -> bool:
        """Handle the head of the queue; False when it was empty."""
        got = await self.client.receive_notification(self.wait_seconds)
        if got is None:
            return False
        receipt = got.get("receiptId")
        if isinstance(receipt, bool) or not isinstance(receipt, int):
            raise ValueError("receiveNotification answered without a numeric receiptId")
        try:
            events = parse_notification(got.get("body"), self.options)
        except Unparsable as exc:
            # It could never be read; kept, it would block every notification behind it.
            log.warning(
                "GREEN-API instance %s: notification %s dropped: %s",
                self.options.id_instance,
                receipt,
                exc,
            )
            events = []
        if events:
            await self.emit(events)
        await self.client.delete_notification(receipt)
        return True

    async def run(self) -> None:
        while True:
            try:
                handled = await self.receive_once()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(self.failures, 6))
                log.warning(
                    "GREEN-API instance %s: receiving failed (%s); again in %.0f s",
                    self.options.id_instance,
                    exc,
                    delay,
                )
                await self.sleep(delay)
                continue
            if not handled:
                # GREEN already held the request open; this only guards against a server
                # that answers an empty queue at once.
                await self.sleep(self.idle_seconds)
