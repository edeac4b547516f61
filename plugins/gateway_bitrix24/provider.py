"""`Bitrix24Provider`: the Bitrix24 Open Lines CRM, one instance serving any number of portals.

Endpoints, all under `/webhooks/{instance}/`:

    install     install page POST (app with UI) or ONAPPINSTALL (API-only app)
    events      the event handler bound with event.bind (connector events, uninstall,
                ONAPPUPDATE)
    placement   the connector settings page (SETTING_CONNECTOR) and the app page
    sms         the SMS provider's handler (messageservice.sender.add), see messageservice.py
    robot       the automation robots' handler (bizproc.robot.add), see robots.py

Route targets are `{member_id}/{open line id}`; see docs/bitrix24.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from gateway import (
    AccountState,
    AccountStatus,
    Ack,
    BadRequest,
    Capabilities,
    CRMProvider,
    DeliveryError,
    InboundEvent,
    InstanceContext,
    Landing,
    Outcome,
    Outgoing,
    ProviderState,
    Route,
    StatusNotice,
    Unauthorized,
    WebhookRequest,
    WebhookResult,
)

from . import events as ev
from .acks import Acknowledger, is_own_note
from .alerts import Alerts
from .config import OPTIONAL_SETTINGS, settings_problems
from .crm import Crm, SyncingHub
from .form_tokens import FormTokens
from .forms import FormError, as_dict, lower_keys, parse_body
from .install import Installer
from .landed import Landings
from .limits import Limits
from .oauth import OAuthClient, Tokens, plain_http_warning
from .outbound import Outbox
from .pages import message_page
from .placement import SettingsPage
from .quotes import QuoteFinder
from .records import NEEDS_REINSTALL, UNPAID, PortalRecord, PortalStore, parse_target, target_of
from .rest import RestClient
from .setup import ConnectorSpec, PortalSetup
from .texts import PortalLanguages, translator

log = logging.getLogger("gateway.bitrix24")

KEEPALIVE_CHECK_SECONDS = 3600.0
WAITERS_CHECK_SECONDS = 30.0
#: Every 10 minutes: robots offer the templates the numbers' providers synced since.
TEMPLATE_CHECK_ROUNDS = 20
#: Scopes the app card must grant: the connector's, then the CRM features' (crm_setup).
APP_SCOPES = ("imopenlines", "imconnector", "im", "messageservice", "bizproc")


class Bitrix24Provider(CRMProvider):
    """Bitrix24 Open Lines through an imconnector REST app (local or marketplace)."""

    name: ClassVar[str] = "bitrix24"
    description: ClassVar[str] = "Bitrix24 Open Lines (imconnector REST app)"
    required_settings: ClassVar[Mapping[str, str]] = {
        "client_id": "the app's client_id (local.… or app.…) from its card in Bitrix24",
        "client_secret": "the app's client_secret from its card in Bitrix24",
    }
    optional_settings: ClassVar[Mapping[str, Any]] = OPTIONAL_SETTINGS
    secret_settings: ClassVar[frozenset[str]] = frozenset({"client_secret"})
    #: Bitrix24 (cloud) calls the handler and install paths from the internet, over https.
    public_url_needs: ClassVar[frozenset[str]] = frozenset({"internet", "https"})

    @classmethod
    def check_route_target(cls, target: str | None) -> tuple[str, str] | None:
        if parse_target(target) is not None:
            return None
        return (
            f'must be "{{member_id}}/{{open line id}}", got {target!r}',
            "copy it from the connector's settings page in Bitrix24 "
            '("Route target for settings.toml"), or link the line there instead',
        )

    @classmethod
    def validate_settings(cls, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return super().validate_settings(config) + settings_problems(config)

    @classmethod
    async def stored_problems(
        cls, instance: str, state: ProviderState, routes: Sequence[Route]
    ) -> list[str]:
        portals = await PortalStore(state).all()
        installed = {record.member_id: record for record in portals}
        found = [
            record.problem_detail or f"{record.domain}: {record.problem}"
            for record in portals
            if record.problem
        ]
        for route in routes:
            target = parse_target(route.target) if route.crm == instance else None
            if target is not None and target[0] not in installed:
                found.append(
                    f"route {route.name}: the app is not installed on portal {target[0]}"
                    " (install it from its card in Bitrix24)"
                )
        if not portals:
            found.append("not installed on any Bitrix24 portal yet")
        return found

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        config = self.config
        self.connector_id = str(config["connector_id"]).lower()
        self.strip_operator_name = bool(config["strip_operator_name"])
        self.idle_refresh_seconds = float(config["idle_refresh_days"]) * 86400.0
        self.capabilities = Capabilities(
            quotes=True,
            edits=True,
            deletes=True,
            groups=True,
            read_receipts=True,  # operators see "read" on what they wrote
            max_text_length=20000,
            max_file_size=100 * 1024 * 1024,
            max_batch=int(config["max_batch"]),
            finds_sent=True,
            settle_seconds=float(config["reconcile_after"]),
            idempotent_sends=False,
            wants_acks=True,
            wants_statuses=True,
        )
        hub = context.hub
        self.store = PortalStore(context.state)
        self.oauth = OAuthClient(
            context.http,
            str(config["client_id"]),
            str(config["client_secret"]),
            str(config["oauth_url"] or "") or None,
        )
        self.tokens = Tokens(self.store, self.oauth, on_problem=self._portal_problem)
        self.limits = Limits(
            float(config["rate"]), int(config["burst"]), max_wait=float(config["max_wait"])
        )
        self.rest = RestClient(
            context.http, self.store, self.tokens, self.limits, on_problem=self._portal_problem
        )
        self.spec = ConnectorSpec(
            connector_id=self.connector_id,
            name=str(config["connector_name"]),
            placement_url=hub.webhook_url(self.instance, "placement"),
            events_url=hub.webhook_url(self.instance, "events"),
            need_signature=bool(config["need_signature"]),
        )
        self.languages = PortalLanguages(self.rest, self.store)
        self.crm = Crm(
            self.instance, self.connector_id, hub, context.state, self.rest, self.store,
            self.languages,
        )  # fmt: skip
        self.setup = PortalSetup(self.rest, self.spec, crm_sync=self.crm.sync)
        self.installer = Installer(
            self.oauth,
            self.rest,
            self.store,
            self.setup,
            self._lines_of,
            allowed_portals=frozenset(str(p) for p in config["allowed_portals"]),
            on_change=self._installed,
        )
        self.landings = Landings(self.rest, context.state)
        self.quotes = QuoteFinder(self.rest, self.landings)
        self.outbox = Outbox(
            self.rest,
            self.store,
            context.media,
            context.fetcher,
            public_url=context.public_url,
            connector_id=self.connector_id,
            messages_per_command=int(config["messages_per_command"]),
            languages=self.languages,
        )
        self.acks = Acknowledger(self.rest, self.store, self.connector_id, languages=self.languages)
        self.alerts = Alerts(
            instance=self.instance,
            hub=hub,
            rest=self.rest,
            store=self.store,
            state=context.state,
            languages=self.languages,
        )
        self.settings_page = SettingsPage(
            instance=self.instance,
            connector_id=self.connector_id,
            hub=SyncingHub(hub, self.crm),
            rest=self.rest,
            store=self.store,
            setup=self.setup,
            tokens=FormTokens(context.state),
            run_setup=self.installer.run_setup,
            alerts=self.alerts,
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self.startup: asyncio.Task[None] | None = None

    def setup_instructions(self) -> list[str]:
        """The app card in Bitrix24 (created by hand: there is no API for it)."""
        install = self.context.hub.webhook_url(self.instance, "install")
        return [
            "In Bitrix24, create the app (local: Developer resources > Other > Local "
            "application; or in the partner console for the Market):",
            f"  Your handler path: {self.spec.placement_url}",
            f"  Initial installation path: {install}",
            f"  Permissions (scopes): {', '.join(APP_SCOPES)}",
            "  (messageservice: WhatsApp as an SMS provider in CRM; bizproc: the automation "
            "robots; im: notifications to CRM users. Without them the connector still works.)",
            "Then copy its client_id and client_secret into this instance's settings.",
        ]

    # lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        plain = plain_http_warning(self.instance, self.config["oauth_url"])
        if plain:
            log.warning(plain)
        await self.store.load()
        await self._warn_if_shared()
        self.startup = asyncio.create_task(
            self._activate_settings_routes(), name=f"{self.instance}:lines"
        )
        self._tasks = [
            self.startup,
            asyncio.create_task(self._keep_alive(), name=f"{self.instance}:keep-alive"),
            asyncio.create_task(self._watch_waiters(), name=f"{self.instance}:robots"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # tenant isolation -----------------------------------------------------------------
    def _unassigned(self) -> list[str]:
        hub = self.context.hub
        return [c for c in hub.instance_names("channel") if not hub.channel_portals(c)]

    async def check_warnings(self, *, stored: bool) -> list[str]:
        """A plain-http `oauth_url`; channels without `portals` while more than one portal
        may install or has."""
        plain = plain_http_warning(self.instance, self.config["oauth_url"])
        found = [plain] if plain else []
        unassigned = self._unassigned()
        if not unassigned:
            return found
        names = ", ".join(unassigned)
        fix = (
            'set portals = ["<member_id or domain>"] under each [channels.NAME], or '
            f"allowed_portals = [one portal] under [crms.{self.instance}]"
        )
        allowed = self.installer.allowed
        if len(allowed) != 1:
            who = (
                "any portal that installs the app"
                if not allowed
                else f"each of the {len(allowed)} allowed_portals"
            )
            found.append(
                f"crms.{self.instance}: {who} may see and link the channels without "
                f"`portals` ({names}); {fix}"
            )
        if stored:
            portals = await self.store.all()
            if len(portals) > 1:
                found.append(
                    f"crms.{self.instance}: installed on {len(portals)} portals "
                    f"({', '.join(sorted(r.domain for r in portals))}), and each may see and "
                    f"link the channels without `portals` ({names}); {fix}"
                )
        return found

    async def _warn_if_shared(self) -> None:
        """Logged at start and after each install: unassigned channels, several portals."""
        unassigned = self._unassigned()
        portals = await self.store.all()
        if unassigned and len(portals) > 1:
            log.warning(
                "%s is installed on %d portals and channels %s have no `portals`: each "
                "portal may see and link them; assign them with [channels.NAME] portals",
                self.instance,
                len(portals),
                ", ".join(unassigned),
            )

    async def _activate_settings_routes(self) -> None:
        """Lines of routes written in settings.toml are switched on at every start, and
        their portals' CRM senders and robots reconciled."""
        portals: set[str] = set()
        for route in await self.context.hub.routes():
            if route.crm != self.instance or route.origin != "settings":
                continue
            target = parse_target(route.target)
            if target is None:
                log.warning(
                    'route %s has no usable target (want "{member_id}/{line id}"): '
                    "operator replies cannot reach it and messages cannot be sent",
                    route.name,
                )
                continue
            record = await self.store.get(target[0])
            if record is None or record.problem:
                continue  # activated at install time
            portals.add(target[0])
            try:
                await self.setup.activate(target[0], target[1], route.channel)
            except DeliveryError as exc:
                log.warning("could not activate line %s of %s: %s", target[1], record.domain, exc)
        for member_id in sorted(portals):
            await self.crm.sync(member_id)

    async def _keep_alive(self) -> None:
        while True:
            try:
                await self.refresh_idle()
            except Exception:
                log.exception("refreshing idle portals failed")
            await asyncio.sleep(KEEPALIVE_CHECK_SECONDS)

    async def _watch_waiters(self) -> None:
        rounds = 0
        while True:
            try:
                await self.crm.robots.check_waiters()
                if rounds % TEMPLATE_CHECK_ROUNDS == 0:
                    members = [r.member_id for r in await self.store.all() if not r.problem]
                    await self.crm.refresh_templates(members)
            except Exception:
                log.exception("checking waiting robots and offered templates failed")
            rounds += 1
            await asyncio.sleep(WAITERS_CHECK_SECONDS)

    async def refresh_idle(self, now: float | None = None) -> list[str]:
        """Refresh portals quiet for `idle_refresh_days`, so their refresh token never
        lapses; returns the member ids refreshed."""
        now = time.time() if now is None else now
        done = []
        for record in await self.store.all():
            if (
                record.problem
                or now - max(record.refreshed_at, record.installed_at) < self.idle_refresh_seconds
            ):
                continue
            try:
                await self.tokens.refresh(record.member_id)
                done.append(record.member_id)
            except DeliveryError as exc:
                log.warning("keep-alive refresh of %s failed: %s", record.domain, exc)
        return done

    # webhooks --------------------------------------------------------------------------
    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        subpath = request.subpath.strip("/")
        if subpath not in ("install", "events", "placement", "sms", "robot"):
            raise BadRequest(f"no such endpoint: {subpath or '(none)'}", status=404)
        if request.method != "POST":
            if subpath == "events":
                raise BadRequest("events are POSTed", status=405)
            t = translator(request.query.get("LANG"))
            page = message_page(t, t.gettext("page.open_from_bitrix24"), status=405)
            return WebhookResult(response=page)
        try:
            form = parse_body(request.body, request.headers.get("content-type", ""))
        except FormError as exc:
            raise BadRequest(str(exc)) from None
        if subpath == "placement":
            return await self.settings_page.handle(form, request.query.get("LANG"))
        if subpath == "install" and "event" not in form:
            answer = await self.installer.from_page(form, request.query.get("LANG"))
            await self._warn_if_shared()
            return answer
        if subpath in ("sms", "robot"):
            # Sent through the queue server like events, with the same `auth` block.
            call = ev.PortalEvent(subpath.upper(), None, lower_keys(as_dict(form.get("auth"))))
            return await self.crm.handle(subpath, form, await self._verify(call))
        try:
            event = ev.read_event(form)
        except FormError as exc:
            raise BadRequest(str(exc)) from None
        if event.name in (ev.APP_INSTALL, ev.APP_UPDATE):
            # Both carry a new application_token: confirmed as an install, never trusted.
            installed = await self.installer.from_event(event)
            await self._warn_if_shared()
            return installed
        record = await self._verify(event)
        return await self._dispatch(event, record)

    async def _verify(self, event: ev.PortalEvent) -> PortalRecord:
        member_id, token = event.member_id, event.application_token
        if not member_id or not token:
            raise Unauthorized("the event carries no member_id or application_token")
        record = await self.store.get(member_id)
        if record is not None and not _same(token, record.application_token):
            record = await self.store.get(member_id, fresh=True)  # reinstalled elsewhere?
        if record is None or not _same(token, record.application_token):
            raise Unauthorized("the event's application_token does not match an installed portal")
        return record

    async def _dispatch(self, event: ev.PortalEvent, record: PortalRecord) -> WebhookResult:
        name = event.name
        if name in (ev.MESSAGE_ADD, ev.MESSAGE_UPDATE, ev.MESSAGE_DELETE):
            return WebhookResult(events=await self._messages(event, record))
        if name == ev.STATUS_DELETE:
            found = ev.connector_and_line(event)
            if found is not None and found[0] == self.connector_id:
                await self._line_gone(
                    record, found[1], "the connector was switched off on the line"
                )
        elif name == ev.LINE_DELETE:
            line = ev.deleted_line(event)
            if line is not None:
                await self._line_gone(record, line, "the open line was deleted")
        elif name == ev.APP_UNINSTALL:
            await self._uninstalled(record)
        else:
            log.debug("ignored %s from %s", name, record.domain)
        return WebhookResult()

    async def _messages(self, event: ev.PortalEvent, record: PortalRecord) -> list[InboundEvent]:
        found = ev.connector_and_line(event)
        if found is None or found[0] != self.connector_id:
            return []
        parser = ev.MessageParser(
            record, found[1], found[0], self.strip_operator_name, self.spec.need_signature
        )
        parsed = [e for e in parser.parse(event) if not _is_own_note(e)]
        parsed = await self.quotes.resolve(record.member_id, found[1], parsed)
        for problem in parser.skipped:
            log.warning("%s from %s: skipped %s", event.name, record.domain, problem)
        target = target_of(record.member_id, found[1])
        if parsed and not any(
            r.crm == self.instance and r.target == target for r in await self.context.hub.routes()
        ):
            log.warning(
                "line %s of %s is linked to no channel: operator messages stay there",
                found[1],
                record.domain,
            )
        return parsed

    async def _line_gone(self, record: PortalRecord, line: int, why: str) -> None:
        target = target_of(record.member_id, line)
        for route in await self.context.hub.routes():
            if route.crm == self.instance and route.target == target:
                await self.context.hub.remove_route(route.name)
                if route.origin == "settings":
                    log.warning(
                        "route %s is in settings.toml but %s in Bitrix24: stopped until the "
                        "next start, when the gateway activates it again",
                        route.name,
                        why,
                    )
                else:
                    log.info("route %s removed: %s (%s)", route.name, why, record.domain)
        await self.store.unpark(record.member_id, line)
        await self.crm.sync(record.member_id)

    async def _uninstalled(self, record: PortalRecord) -> None:
        for route in await self.context.hub.routes():
            target = parse_target(route.target) if route.crm == self.instance else None
            if target is not None and target[0] == record.member_id:
                await self.context.hub.remove_route(route.name)
        await self.store.delete(record.member_id)
        log.info("uninstalled from portal %s: its tokens and links are dropped", record.domain)
        await self.publish_state()

    async def _lines_of(self, member_id: str) -> dict[int, str]:
        lines = {}
        for route in await self.context.hub.routes():
            target = parse_target(route.target) if route.crm == self.instance else None
            if target is not None and target[0] == member_id:
                lines[target[1]] = route.channel
        return lines

    # delivery --------------------------------------------------------------------------
    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        parked_before = len(self.store.parked_lines())
        outcomes = await self.outbox.send(batch)
        await self.landings.remember(batch, outcomes)
        if len(self.store.parked_lines()) != parked_before:
            await self.publish_state()
        await self.crm.delivered(batch, outcomes)
        return outcomes

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        """Read the chats back: see `landed.py`."""
        return await self.landings.find(batch)

    async def acknowledge(self, acks: Sequence[Ack]) -> Sequence[Outcome]:
        return await self.crm.acknowledge(acks, self.acks.acknowledge)

    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        return await self.crm.apply_status(notices, self.acks.apply_status)

    # state -----------------------------------------------------------------------------
    async def account_state(self) -> AccountState:
        records = await self.store.all()
        if not records:
            return AccountState(
                AccountStatus.DISCONNECTED,
                "not installed on any Bitrix24 portal yet: install the app from its card",
            )
        for problem, status in (
            (NEEDS_REINSTALL, AccountStatus.NEEDS_REINSTALL),
            (UNPAID, AccountStatus.UNPAID),
        ):
            hit = [r.problem_detail or r.domain for r in records if r.problem == problem]
            if hit:
                return AccountState(status, "; ".join(hit))
        troubles = [
            f"{r.domain}: setup incomplete: {r.setup_error}" for r in records if r.setup_error
        ]
        domains = {r.member_id: r.domain for r in records}
        troubles += [
            f"{domains.get(p.member_id, p.member_id)} line {p.line}: {p.code}"
            for p in self.store.parked_lines()
        ]
        if troubles:
            return AccountState(AccountStatus.ERROR, "; ".join(troubles))
        names = ", ".join(sorted(r.domain for r in records))
        return AccountState(AccountStatus.CONNECTED, f"installed on {names}")

    async def channel_state_changed(self, channel: str, state: AccountState) -> None:
        """Alerts inside Bitrix24 when a linked number stops or starts working again."""
        await self.alerts.channel_changed(channel, state)

    async def publish_state(self) -> None:
        """Push the aggregate state to the core now (admin API, /metrics)."""
        state = await self.account_state()
        try:
            await self.context.hub.emit(
                self.instance, [InboundEvent(f"bitrix24:state:{time.time()}", state)]
            )
        except Exception:
            log.exception("could not publish the state of %s", self.instance)

    async def _portal_problem(self, record: PortalRecord) -> None:
        await self.alerts.portal_refused(record)
        await self.publish_state()

    async def _installed(self, member_id: str) -> None:
        """A portal was (re)installed or set up again: if it works now, say so."""
        await self.publish_state()
        record = await self.store.get(member_id)
        if record is not None and not record.problem:
            await self.alerts.portal_back(member_id)


def _same(given: str, stored: str) -> bool:
    return hmac.compare_digest(given.encode(), stored.encode())


def _is_own_note(event: InboundEvent) -> bool:
    # If a portal ever echoed a failure note back as an operator message, it must not
    # reach the customer.
    text = getattr(event.event, "text", "")
    return isinstance(text, str) and is_own_note(text)
