"""The CRM features of one instance, wired together: SMS provider, robots, their setup.

`Crm` owns the pieces (`crm_setup`, `messageservice`, `robots`, `crm_reports`) and the
points where the rest of the plugin calls them: setup of a portal, a line linked or
unlinked, handler calls, acks and statuses of CRM-written messages, customer messages
delivered into a portal (for the robots waiting for them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from gateway import (
    AccountState,
    Ack,
    Hub,
    InboundEvent,
    MessageTemplate,
    Outcome,
    Outgoing,
    ProviderKind,
    ProviderState,
    Route,
    StatusNotice,
    WebhookResult,
)

from .crm_reports import CrmReporter, is_crm
from .crm_setup import CrmSetup
from .messageservice import SmsProvider
from .records import PortalRecord, PortalStore, parse_target
from .rest import RestClient
from .robots import Robots
from .texts import PortalLanguages

log = logging.getLogger("gateway.bitrix24")

T = TypeVar("T", Ack, StatusNotice)


class Crm:
    def __init__(
        self,
        instance: str,
        connector_id: str,
        hub: Hub,
        state: ProviderState,
        rest: RestClient,
        store: PortalStore,
        languages: PortalLanguages,
    ) -> None:
        self.instance = instance
        self.hub = hub
        self.setup = CrmSetup(
            rest, connector_id, hub.webhook_url(instance, "sms"), hub.webhook_url(instance, "robot")
        )
        self.reports = CrmReporter(rest, store, connector_id, languages=languages)
        self.sms = SmsProvider(instance, hub, self.setup, self.reports)
        self.robots = Robots(instance, connector_id, hub, state, rest, self.reports)
        #: What each portal's robots offer now, so a changed template list re-registers them.
        self._offered: dict[str, str] = {}

    async def channels_of(self, member_id: str) -> list[str]:
        channels = set()
        for route in await self.hub.routes():
            target = parse_target(route.target) if route.crm == self.instance else None
            if target is not None and target[0] == member_id:
                channels.add(route.channel)
        return sorted(channels)

    async def sync(self, member_id: str) -> str | None:
        """Reconcile the portal's senders and robots with its linked numbers (and the
        templates those numbers offer)."""
        channels = await self.channels_of(member_id)
        templates = await self.templates_of(channels)
        error = await self.setup.sync_safely(member_id, channels, templates)
        if error is None:
            self._offered[member_id] = _signature(templates)
        return error

    async def templates_of(self, channels: Sequence[str]) -> list[MessageTemplate]:
        found: list[MessageTemplate] = []
        for channel in channels:
            for template in await self.hub.message_templates(channel):
                if template not in found:
                    found.append(template)
        return found

    async def refresh_templates(self, member_ids: Sequence[str]) -> int:
        """Re-register the robots of portals whose numbers' templates changed since."""
        done = 0
        for member_id in member_ids:
            templates = await self.templates_of(await self.channels_of(member_id))
            if self._offered.get(member_id, _signature(())) != _signature(templates):
                await self.sync(member_id)
                done += 1
        return done

    async def handle(
        self, subpath: str, form: dict[str, Any], record: PortalRecord
    ) -> WebhookResult:
        if subpath == "sms":
            return await self.sms.handle(form, record)
        return await self.robots.handle(form, record)

    async def acknowledge(
        self, acks: Sequence[Ack], others: Callable[[Sequence[Ack]], Awaitable[Sequence[Outcome]]]
    ) -> list[Outcome]:
        return await _split(
            acks, [is_crm(a.message.extra) for a in acks], self.reports.acknowledge, others
        )

    async def apply_status(
        self,
        notices: Sequence[StatusNotice],
        others: Callable[[Sequence[StatusNotice]], Awaitable[Sequence[Outcome]]],
    ) -> list[Outcome]:
        mine = [is_crm(n.message_extra) for n in notices]
        return await _split(notices, mine, self.reports.apply_status, others)

    async def delivered(self, batch: Sequence[Outgoing], outcomes: Sequence[Outcome]) -> None:
        try:
            await self.robots.delivered(batch, outcomes)
        except Exception:
            # The messages are delivered; a waiting robot is answered at the next check.
            log.exception("answering robots waiting for replies failed")


async def _split(
    items: Sequence[T],
    mine: list[bool],
    crm: Callable[[Sequence[T]], Awaitable[Sequence[Outcome]]],
    others: Callable[[Sequence[T]], Awaitable[Sequence[Outcome]]],
) -> list[Outcome]:
    """Outcomes of `items` in order, CRM-written ones handled by `crm`, the rest by `others`."""
    if not any(mine):
        return list(await others(items))
    outcomes: list[Outcome] = [None] * len(items)
    for flag, handler in ((True, crm), (False, others)):
        indices = [i for i, m in enumerate(mine) if m is flag]
        if indices:
            results = await handler([items[i] for i in indices])
            for index, outcome in zip(indices, results, strict=True):
                outcomes[index] = outcome
    return outcomes


def _signature(templates: Sequence[MessageTemplate]) -> str:
    return "|".join(sorted(f"{t.name}:{t.language}:{t.parameter_count}" for t in templates))


class SyncingHub:
    """The hub as the settings page sees it: linking or unlinking a line also reconciles
    the portal's CRM registrations (a sender per linked number)."""

    def __init__(self, hub: Hub, crm: Crm) -> None:
        self.hub = hub
        self.crm = crm

    async def add_route(self, route: Route) -> None:
        await self.hub.add_route(route)
        await self._changed(route)

    async def remove_route(self, name: str) -> None:
        gone = [r for r in await self.hub.routes() if r.name == name]
        await self.hub.remove_route(name)
        for route in gone:
            await self._changed(route)

    async def _changed(self, route: Route) -> None:
        target = parse_target(route.target) if route.crm == self.crm.instance else None
        if target is not None:
            await self.crm.sync(target[0])

    async def emit(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        return await self.hub.emit(instance, events)

    def instance_names(self, kind: ProviderKind | None = None) -> list[str]:
        return self.hub.instance_names(kind)

    def provider_of(self, instance: str) -> str:
        return self.hub.provider_of(instance)

    def channel_portals(self, channel: str) -> frozenset[str]:
        return self.hub.channel_portals(channel)

    async def account_state(self, instance: str) -> AccountState:
        return await self.hub.account_state(instance)

    async def routes(self) -> list[Route]:
        return await self.hub.routes()

    async def import_history(self, route: str, days: float | None = None) -> bool:
        return await self.hub.import_history(route, days)

    def history_days(self) -> float:
        return self.hub.history_days()

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        return await self.hub.was_sent_by_gateway(instance, native_id)

    async def sends_in_flight(self, instance: str) -> bool:
        return await self.hub.sends_in_flight(instance)

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        return self.hub.webhook_url(instance, subpath)

    def conversation_for_phone(self, instance: str, phone: str) -> str:
        return self.hub.conversation_for_phone(instance, phone)

    async def message_templates(self, instance: str) -> list[MessageTemplate]:
        return await self.hub.message_templates(instance)
