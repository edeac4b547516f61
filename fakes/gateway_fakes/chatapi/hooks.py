"""Chat API webhook sender: batches, `guaranteedHooks` retries, `webhookStatus` log (1.5, 1.6)."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.testing.fake_common import (
    Clock,
)
from gateway.testing.fake_delivery import (
    DeliveryReport,
    WebhookAttempt,
    post_webhook,
)

from .model import ChatApiSettings, HookBatch


class HookSender:
    """Items wait in an outbox and are cut into batches of one kind when delivery starts.

    A batch keeps its items across retries, so a retried POST repeats the same body.
    Chat API promises no order, so a failing batch does not hold back the others.
    """

    def __init__(
        self,
        instance_id: str,
        clock: Clock,
        settings: ChatApiSettings,
        *,
        batch_size: int,
        max_attempts: int,
        retry_delay: float,
        timeout: float,
    ) -> None:
        self.instance_id = instance_id
        self.clock = clock
        self.settings = settings
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        self.batches: list[HookBatch] = []
        self.delivered: list[HookBatch] = []
        self.dropped: list[HookBatch] = []
        self.attempts: list[WebhookAttempt] = []
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self._delivering = False

    def push(self, kind: str, item: dict[str, Any]) -> None:
        self.outbox.append((kind, item))

    def form_batches(self) -> None:
        while self.outbox:
            kind = self.outbox[0][0]
            size = 1 if kind == "status" else self.batch_size
            items: list[dict[str, Any]] = []
            while self.outbox and self.outbox[0][0] == kind and len(items) < size:
                items.append(self.outbox.pop(0)[1])
            self.batches.append(HookBatch(kind, items, self.clock()))

    @property
    def pending(self) -> list[dict[str, Any]]:
        self.form_batches()
        return [b.body(self.instance_id) for b in self.batches]

    def redeliver(self, msg_id: str | None = None) -> int:
        for batch in reversed(self.delivered):
            if msg_id is None or any(i.get("id") == msg_id for i in batch.items):
                self.batches.append(HookBatch(batch.kind, list(batch.items), self.clock()))
                return len(batch.items)
        raise KeyError(f"no delivered webhook holds {msg_id!r}")

    async def deliver(self, http: httpx.AsyncClient | None, *, max_posts: int) -> DeliveryReport:
        report = DeliveryReport()
        if self._delivering:
            return report
        self._delivering = True
        try:
            tried: set[int] = set()
            while len(report.attempts) < max_posts:
                self.form_batches()
                url = self.settings.webhookUrl
                if not url:
                    # Nobody to tell: the items live on only in /messages.
                    report.dropped += len(self.batches)
                    self.dropped.extend(self.batches)
                    self.batches.clear()
                    break
                now = self.clock()
                due = [b for b in self.batches if id(b) not in tried and b.next_attempt_at <= now]
                if not due:
                    break
                for batch in due[: max_posts - len(report.attempts)]:
                    tried.add(id(batch))
                    await self._post(http, batch, url, report)
        finally:
            self._delivering = False
        self.form_batches()
        report.pending = len(self.batches)
        return report

    async def _post(
        self, http: httpx.AsyncClient | None, batch: HookBatch, url: str, report: DeliveryReport
    ) -> None:
        batch.attempts += 1
        attempt = await post_webhook(
            http,
            url,
            batch.body(self.instance_id),
            wait_seconds=self.timeout,
            attempt=batch.attempts,
            at=self.clock(),
        )
        self.attempts.append(attempt)
        report.attempts.append(attempt)
        if self.settings.webhookStatuses and batch.kind == "messages":
            for item in batch.items:
                self.statuses.setdefault(str(item["id"]), []).append(
                    {
                        "msgId": item["id"],
                        "time": int(self.clock()),
                        "status": "sent" if attempt.ok else "not sent",
                    }
                )
        if attempt.ok:
            self.batches.remove(batch)
            self.delivered.append(batch)
            report.delivered += 1
            return
        report.failed += 1
        if self.settings.guaranteedHooks and batch.attempts < self.max_attempts:
            batch.next_attempt_at = self.clock() + self.retry_delay
        else:
            self.batches.remove(batch)
            self.dropped.append(batch)
            report.dropped += 1

    def next_due(self) -> float | None:
        return min((b.next_attempt_at for b in self.batches), default=None)

    def webhook_status(self, msg_id: str) -> list[dict[str, Any]]:
        records = list(self.statuses.get(msg_id, []))
        if any(i.get("id") == msg_id for b in self.batches for i in b.items):
            records.append({"msgId": msg_id, "time": int(self.clock()), "status": "queued"})
        return records
