"""The instance's notification queue: one FIFO drained by webhooks or by polling (spec 2.5)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import httpx

from gateway.testing.fake_common import (
    Clock,
    ManualClock,
)
from gateway.testing.fake_delivery import (
    DeliveryReport,
    WebhookAttempt,
    post_webhook,
)

from .model import Notification


class NotificationQueue:
    """Strict FIFO: a notification that fails blocks the ones behind it (head-of-line).

    A failed head is retried `retry_pause` seconds later on the clock, at the earliest on
    the next `deliver()` call; anything older than `retention` is dropped unread.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        retry_pause: float = 60.0,
        timeout: float = 180.0,
        retention: float = 86_400.0,
        auth_style: Literal["bearer", "raw"] = "bearer",
    ) -> None:
        self.clock = clock
        self.retry_pause = retry_pause
        self.timeout = timeout
        self.retention = retention
        self.auth_style = auth_style
        self.items: list[Notification] = []
        self.delivered: list[Notification] = []
        self.expired: list[Notification] = []
        self.attempts: list[WebhookAttempt] = []
        self._receipt = 0
        self._expired_reported = 0
        self._delivering = False

    def push(self, body: dict[str, Any]) -> Notification:
        self._receipt += 1
        note = Notification(self._receipt, body, self.clock())
        self.items.append(note)
        return note

    def expire(self) -> int:
        limit = self.clock() - self.retention
        old = [n for n in self.items if n.created_at < limit]
        for note in old:
            self.items.remove(note)
        self.expired.extend(old)
        return len(old)

    # -- polling ---------------------------------------------------------------------------

    def head(self) -> Notification | None:
        self.expire()
        return self.items[0] if self.items else None

    def delete(self, receipt_id: int) -> bool:
        for note in self.items:
            if note.receipt_id == receipt_id:
                self.items.remove(note)
                self.delivered.append(note)
                return True
        return False

    def clear(self) -> int:
        count = len(self.items)
        self.items.clear()
        return count

    def redeliver(self, id_message: str | None = None, type_webhook: str | None = None) -> int:
        """Queue a copy of a delivered notification, as after a timeout the gateway survived."""
        for note in reversed(self.delivered):
            if id_message is not None and note.body.get("idMessage") != id_message:
                continue
            if type_webhook is not None and note.type_webhook != type_webhook:
                continue
            return self.push(copy.deepcopy(note.body)).receipt_id
        raise KeyError(f"no delivered notification matches {id_message!r} / {type_webhook!r}")

    # -- webhooks --------------------------------------------------------------------------

    def auth_headers(self, token: str) -> dict[str, str]:
        if not token:
            return {}
        return {"Authorization": f"Bearer {token}" if self.auth_style == "bearer" else token}

    async def deliver(
        self, http: httpx.AsyncClient | None, url: str, token: str, *, max_posts: int = 1000
    ) -> DeliveryReport:
        # Expiry also happens between calls (any API call ticks the clock); report it all.
        self.expire()
        report = DeliveryReport(dropped=len(self.expired) - self._expired_reported)
        self._expired_reported = len(self.expired)
        if self._delivering or not url:
            # No webhookUrl means polling mode: notifications wait for receiveNotification.
            report.pending = len(self.items)
            return report
        self._delivering = True
        try:
            retried: set[int] = set()
            while self.items and len(report.attempts) < max_posts:
                head = self.items[0]
                if head.next_attempt_at > self.clock() or head.receipt_id in retried:
                    break
                head.attempts += 1
                attempt = await post_webhook(
                    http,
                    url,
                    head.body,
                    headers=self.auth_headers(token),
                    wait_seconds=self.timeout,
                    attempt=head.attempts,
                    at=self.clock(),
                )
                self.attempts.append(attempt)
                report.attempts.append(attempt)
                if attempt.ok:
                    if head in self.items:
                        self.items.remove(head)
                    self.delivered.append(head)
                    report.delivered += 1
                    continue
                report.failed += 1
                head.next_attempt_at = self.clock() + self.retry_pause
                retried.add(head.receipt_id)
        finally:
            self._delivering = False
        report.pending = len(self.items)
        return report

    def next_due(self) -> float | None:
        return self.items[0].next_attempt_at if self.items else None

    def jump_to_next_due(self) -> bool:
        """On a ManualClock, move time to the head's retry; False if time cannot move."""
        due = self.next_due()
        if due is None or not isinstance(self.clock, ManualClock):
            return False
        if due > self.clock():
            self.clock.set(due)
        return True
