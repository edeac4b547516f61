"""Observations: counted in metrics, logged, handed to the plugins' `observe` hook.

None of that is needed to answer a webhook, so the webhook path (ingest, refusals) uses
`notify_later`: it only queues the observation, and the queue is drained once per turn of
the event loop (`loop.call_soon`) or by `flush` (the webhook handler flushes after its
answer is sent, metrics are read after a flush, the gateway flushes when it stops).
Everything else (delivery, accounts) calls `notify`, which handles the queue first, so
observations keep the order they were made in.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.hookcall import call_isolated
from gateway.metrics import Metrics
from gateway.observe import Observation
from gateway.plugins import PluginHost

log = logging.getLogger("gateway")

_LOG_LEVELS = {
    "dead_lettered": logging.WARNING,
    "rejected": logging.WARNING,
    "held": logging.WARNING,
    "accepted": logging.DEBUG,
    "duplicate": logging.DEBUG,
    "delivered": logging.DEBUG,
}


class Notifier:
    """Where every observation of the pipeline goes."""

    def __init__(self, metrics: Metrics, host: PluginHost) -> None:
        self.metrics = metrics
        # Looked up once: observations are made for every message on the hot path.
        self._observers = host.hook.observe.get_hookimpls()
        self._pending: list[Observation] = []
        self._scheduled = False

    def notify(self, observation: Observation) -> None:
        """Count, log and hand an observation to the `observe` hook, now."""
        if self._pending:
            self.flush()
        self._handle(observation)

    def notify_later(self, observation: Observation) -> None:
        """Queue an observation to be handled after the current turn of the loop (at once
        when no loop runs): for the webhook path, which answers first."""
        self._pending.append(observation)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Handle every queued observation, in the order they were made."""
        self._scheduled = False
        while self._pending:
            pending, self._pending = self._pending, []
            for observation in pending:
                try:
                    self._handle(observation)
                except Exception:
                    # One broken observation must not cost the others queued with it.
                    log.exception("handling the observation %s failed", observation.type)

    def _handle(self, observation: Observation) -> None:
        self._count(observation)
        # One line per message at INFO would cost more than ingesting it; counts are metrics.
        level = _LOG_LEVELS.get(observation.type, logging.INFO)
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s",
                observation.type,
                " ".join(f"{k}={v}" for k, v in observation.detail.items()),
                extra={
                    "instance": observation.instance,
                    "route": observation.route,
                    "message_id": observation.message_id,
                    "job_id": observation.job_id,
                },
            )
        for impl in self._observers:
            call_isolated(impl, "observe", observation=observation)

    def _count(self, observation: Observation) -> None:
        metrics = self.metrics
        detail = observation.detail
        kind = str(detail.get("kind", ""))
        where = observation.instance or ""
        if observation.type == "accepted":
            metrics.inc("gateway_events_received_total", instance=where)
        elif observation.type == "duplicate":
            metrics.inc("gateway_events_duplicate_total", instance=where)
        elif observation.type == "rejected":
            metrics.inc(
                "gateway_webhooks_rejected_total", instance=where, reason=str(detail.get("reason"))
            )
        elif observation.type == "delivered":
            metrics.inc("gateway_jobs_delivered_total", destination=where, kind=kind)
            metrics.observe(
                "gateway_delivery_latency_seconds", float(detail["latency"]), destination=where
            )
        elif observation.type == "retried":
            metrics.inc("gateway_jobs_retried_total", destination=where, kind=kind)
        elif observation.type == "dead_lettered":
            metrics.inc("gateway_jobs_dead_lettered_total", destination=where, kind=kind)
        elif observation.type == "reconciled":
            landed = "yes" if detail.get("landed") else "no"
            metrics.inc("gateway_sends_reconciled_total", destination=where, landed=landed)
