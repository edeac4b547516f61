"""The connector's settings page (placement `SETTING_CONNECTOR`) and the app page.

Bitrix24 opens the page with a POST carrying the user's `AUTH_ID` and `member_id`; any
employee who opens an app page has such a token, so the page is only shown after the stored
portal answered `user.admin` with `true` for that token (an administrator: the only per-user
rights check Bitrix24's REST API offers an app). Its buttons POST back with a form token the
gateway signed, bound to the portal, the line and that `AUTH_ID` (30 minutes), plus the same
`AUTH_ID`, which is checked with `user.admin` again before anything is changed or shown and
then used for `imconnector.activate`, so Bitrix24 also checks the user's own rights. A form
token alone, or with another user's or a refused `AUTH_ID`, gets a 403 and no new token.
Linking writes a route `{member_id}/{line}` into the gateway store.

The line page's own refresh (`line_page`, every few seconds while a number waits) is such a
POST too, `action=state`, guarded the same way, and answered in JSON: `{"html", "poll"}`,
or `{"error"}` with the refusal's status, after which the page stops asking.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from gateway import AccountState, DeliveryError, Hub, Route, TemporaryError, WebhookResult

from .alerts import USERS_KEY, Alerts, alert_users, parse_users
from .form_tokens import FormTokens
from .forms import as_dict, as_int, as_str
from .line_page import POLL_SECONDS, line_page, live_html, needs_polling, number_label
from .pages import DOWN_STATES, ChannelView, LineView, PortalView, message_page, portal_page
from .records import PortalRecord, PortalStore, parse_target, target_of
from .rest import RestClient
from .setup import PortalSetup
from .texts import Translator, translator

log = logging.getLogger("gateway.bitrix24")

_SAFE_NAME = re.compile(r"[^a-z0-9_-]")


def route_name(instance: str, member_id: str, line: int) -> str:
    name = _SAFE_NAME.sub("-", f"{instance}-{member_id[:12]}-{line}".lower())
    return name[:63]


class SettingsPage:
    def __init__(
        self,
        *,
        instance: str,
        connector_id: str,
        hub: Hub,
        rest: RestClient,
        store: PortalStore,
        setup: PortalSetup,
        tokens: FormTokens,
        run_setup: Callable[[str], Any],
        alerts: Alerts | None = None,
    ) -> None:
        self.instance = instance
        self.connector_id = connector_id
        self.hub = hub
        self.rest = rest
        self.store = store
        self.setup = setup
        self.tokens = tokens
        self.run_setup = run_setup
        self.alerts = alerts
        self.url = hub.webhook_url(instance, "placement")
        #: Seconds between the refreshes of a settings page that waits for a number.
        self.poll_seconds = POLL_SECONDS

    async def handle(self, form: dict[str, Any], lang: str | None = None) -> WebhookResult:
        """A page open (Bitrix24's POST) or a button's POST; `lang` is Bitrix24's `LANG`."""
        # The buttons carry the page's language on, as Bitrix24 only adds it to the first open.
        lang = lang or as_str(form.get("LANG"))
        if "form_token" in form:
            return WebhookResult(response=await self._action(form, lang))
        return WebhookResult(response=await self._open(form, lang))

    async def _open(self, form: dict[str, Any], lang: str | None) -> Any:
        member_id = as_str(form.get("member_id"))
        auth_id = as_str(form.get("AUTH_ID"))
        t = translator(lang)
        if not member_id or not auth_id:
            return message_page(t, t.gettext("page.open_from_bitrix24"), status=400)
        record = await self.store.get(member_id)
        if record is None:
            return message_page(t, t.gettext("page.not_installed"), status=404)
        t = translator(lang, record.language)
        given = as_str(form.get("APPLICATION_TOKEN"))
        if given is not None and not hmac.compare_digest(
            given.encode(), record.application_token.encode()
        ):
            return message_page(t, t.gettext("page.not_from_portal"), status=403)
        refusal = await self._verify_user(record, auth_id, t)
        if refusal is not None:
            return message_page(t, refusal[1], status=refusal[0])
        if (as_str(form.get("PLACEMENT")) or "DEFAULT") == "SETTING_CONNECTOR":
            options = _options(form.get("PLACEMENT_OPTIONS"))
            connector = (as_str(options.get("CONNECTOR")) or "").lower()
            line = as_int(options.get("LINE"))
            if connector != self.connector_id or line is None:
                return message_page(t, t.gettext("page.other_connector"), status=400)
            return await self._line(record, line, auth_id, t)
        return await self._portal(record, auth_id, t)

    async def _verify_user(
        self, record: PortalRecord, auth_id: str, t: Translator
    ) -> tuple[int, str] | None:
        """None if the portal says `auth_id` is an administrator's, else (status, why not)."""
        try:
            admin = await self.rest.ask_as(record, "user.admin", auth_id)
        except TemporaryError as exc:
            return 503, t.gettext("page.portal_busy", code=exc.code)
        except DeliveryError:
            log.warning("settings page of %s: Bitrix24 refused the AUTH_ID", record.domain)
            return 403, t.gettext("page.session_unverified")
        if admin is not True and admin not in ("true", "1", "Y"):
            log.warning("settings page of %s: refused a user who is not an admin", record.domain)
            return 403, t.gettext("page.admins_only")
        return None

    async def _action(self, form: dict[str, Any], lang: str | None) -> Any:
        auth_id = as_str(form.get("AUTH_ID")) or ""
        action = as_str(form.get("action")) or "refresh"
        # The page's own refresh asks for JSON; a refusal then says why in JSON too.
        answer = _json_refusal if action == "state" else message_page
        verified = await self.tokens.verify(as_str(form.get("form_token")) or "", auth_id)
        t = translator(lang)
        if verified is None or not auth_id:
            return answer(t, t.gettext("page.form_expired"), status=403)
        member_id, line = verified
        record = await self.store.get(member_id)
        if record is None:
            return answer(t, t.gettext("page.no_longer_installed"), status=404)
        t = translator(lang, record.language)
        refusal = await self._verify_user(record, auth_id, t)
        if refusal is not None:
            return answer(t, refusal[1], status=refusal[0])
        channel = as_str(form.get("channel")) or ""
        if line == 0:
            notice = None
            if action == "setup":
                error = await self.run_setup(member_id)
                notice = (
                    t.gettext("portal.setup_failed", error=error)
                    if error
                    else t.gettext("portal.setup_repeated")
                )
            error = None
            if action == "alerts":
                notice, error = await self._alert_users(record, as_str(form.get("alert_users")), t)
            fresh = await self.store.get(member_id) or record
            return await self._portal(fresh, auth_id, t, notice, error)
        if action == "state":
            view = await self._line_view(record, line, auth_id, t)
            return JSONResponse(
                {"html": live_html(t, view), "poll": needs_polling(view)},
                headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
            )
        notice = error = None
        if action == "alerts":
            notice, error = await self._alert_users(record, as_str(form.get("alert_users")), t)
            record = await self.store.get(member_id) or record
        if action == "link":
            readable, days = _days(form.get("history_days"))
            if not readable:
                notice, error = None, t.gettext("link.history.bad")
            else:
                notice, error = await self._link(record, line, channel, auth_id, t, days)
        elif action == "unlink":
            notice, error = await self._unlink(record, line, auth_id, t)
        view = await self._line_view(record, line, auth_id, t, notice, error)
        return line_page(t, view, self.poll_seconds)

    def _may_link(self, channel: str, record: PortalRecord) -> bool:
        """Whether `[channels.NAME] portals` lets this portal see and link `channel`."""
        portals = self.hub.channel_portals(channel)
        return not portals or bool({record.member_id, record.domain} & portals)

    async def _link(
        self,
        record: PortalRecord,
        line: int,
        channel: str,
        auth_id: str,
        t: Translator,
        days: float | None = None,
    ) -> tuple[str | None, str | None]:
        if channel not in self.hub.instance_names("channel") or not self._may_link(channel, record):
            return None, t.gettext("link.no_such_channel", channel=channel)
        target = target_of(record.member_id, line)
        routes = await self.hub.routes()
        existing = None
        for route in routes:
            here = route.crm == self.instance and route.target == target
            if here and route.channel == channel:
                existing = route
            if here and route.channel != channel:
                return None, t.gettext("link.line_taken", channel=route.channel)
            if route.channel == channel and not here:
                where = self._where(route, record.member_id, t)
                return None, t.gettext("link.channel_taken", channel=channel, where=where)
        try:
            await self.setup.activate(record.member_id, line, channel, token=auth_id)
        except DeliveryError as exc:
            return None, t.gettext("link.activate_failed", error=str(exc))
        await self.store.unpark(record.member_id, line)
        if self.alerts is not None:
            await self.alerts.remember_linker(record, channel, auth_id)
        label = number_label(channel, await self.hub.account_state(channel))
        if existing is not None:  # reconnecting a parked line: the route is there already
            return t.gettext("link.reconnected", channel=label), None
        name = route_name(self.instance, record.member_id, line)
        await self.hub.add_route(
            Route(name=name, channel=channel, crm=self.instance, target=target)
        )
        log.info("linked %s to line %s of %s (route %s)", channel, line, record.domain, name)
        linked = t.gettext("link.linked", channel=label)
        if days is None:
            days = self.hub.history_days()
        if not days:
            return linked, None
        if await self.hub.import_history(name, days):
            history = t.gettext("link.history.importing", days=f"{days:g}")
        else:
            history = t.gettext("link.history.none", channel=channel)
        return f"{linked} {history}", None

    async def _unlink(
        self, record: PortalRecord, line: int, auth_id: str, t: Translator
    ) -> tuple[str | None, str | None]:
        target = target_of(record.member_id, line)
        linked = [
            r for r in await self.hub.routes() if r.crm == self.instance and r.target == target
        ]
        if any(r.origin == "settings" for r in linked):
            return None, t.gettext("unlink.fixed")
        for route in linked:
            await self.hub.remove_route(route.name)
        await self.store.unpark(record.member_id, line)
        try:
            await self.setup.deactivate(record.member_id, line, token=auth_id)
        except DeliveryError as exc:
            return t.gettext("unlink.gateway_only"), t.gettext(
                "unlink.deactivate_failed", error=str(exc)
            )
        return t.gettext("unlink.done"), None

    def _where(self, route: Route, member_id: str, t: Translator) -> str:
        parsed = parse_target(route.target) if route.crm == self.instance else None
        if parsed is not None and parsed[0] == member_id:
            return t.gettext("where.open_line", line=parsed[1])
        if route.crm == self.instance:
            return t.gettext("where.other_portal")
        return t.gettext("where.other_crm", crm=route.crm)

    async def _line(self, record: PortalRecord, line: int, auth_id: str, t: Translator) -> Any:
        view = await self._line_view(record, line, auth_id, t)
        return line_page(t, view, self.poll_seconds)

    async def _line_view(
        self,
        record: PortalRecord,
        line: int,
        auth_id: str,
        t: Translator,
        notice: str | None = None,
        error: str | None = None,
    ) -> LineView:
        target = target_of(record.member_id, line)
        routes = await self.hub.routes()
        channels = []
        for name in self.hub.instance_names("channel"):
            if not self._may_link(name, record):
                continue  # another tenant's number: not even its name is shown
            state = await self.hub.account_state(name)
            view = ChannelView(name, state, provider=self.hub.provider_of(name))
            for route in routes:
                if route.channel != name:
                    continue
                if route.crm == self.instance and route.target == target:
                    view.linked_here = True
                    view.fixed = route.origin == "settings"
                else:
                    view.linked_elsewhere = self._where(route, record.member_id, t)
            if view.linked_elsewhere and not view.linked_here:
                parsed = [
                    parse_target(r.target)
                    for r in routes
                    if r.channel == name and r.crm == self.instance
                ]
                if not any(p is not None and p[0] == record.member_id for p in parsed):
                    continue  # linked on another portal or CRM: none of this one's business
                # linked to another line here: named, but its state and QR stay there
                view.state = AccountState(view.state.status)
            channels.append(view)
        parked = self.store.parked(record.member_id, line)
        return LineView(
            member_id=record.member_id,
            domain=record.domain,
            origin=record.base_url,
            line=line,
            action_url=self.url,
            form_token=await self.tokens.issue(record.member_id, line, auth_id),
            auth_id=auth_id,
            channels=channels,
            history_days=self.hub.history_days(),
            notice=notice,
            error=error,
            parked=parked.text if parked else None,
            problem=_problem(record),
            alert_users=", ".join(str(u) for u in alert_users(record)),
            language=t.language,
        )

    async def _alert_users(
        self, record: PortalRecord, typed: str | None, t: Translator
    ) -> tuple[str | None, str | None]:
        users = parse_users(typed or "")
        if users is None:
            return None, t.gettext("portal.alerts.bad")

        def change(stored: PortalRecord) -> None:
            stored.extra[USERS_KEY] = users

        await self.store.update(record.member_id, change)
        if not users:
            return t.gettext("portal.alerts.saved_default"), None
        listed = ", ".join(str(u) for u in users)
        return t.gettext("portal.alerts.saved", users=listed), None

    async def _portal(
        self,
        record: PortalRecord,
        auth_id: str,
        t: Translator,
        notice: str | None = None,
        error: str | None = None,
    ) -> Any:
        lines = []
        down = []
        for route in await self.hub.routes():
            parsed = parse_target(route.target) if route.crm == self.instance else None
            if parsed is not None and parsed[0] == record.member_id:
                state = await self.hub.account_state(route.channel)
                label = number_label(route.channel, state)
                lines.append((parsed[1], label))
                if state.status in DOWN_STATES:
                    down.append((label, state))
        view = PortalView(
            member_id=record.member_id,
            domain=record.domain,
            origin=record.base_url,
            action_url=self.url,
            form_token=await self.tokens.issue(record.member_id, 0, auth_id),
            auth_id=auth_id,
            lines=sorted(lines),
            problem=_problem(record),
            setup_error=record.setup_error,
            notice=notice,
            language=t.language,
            down=down,
            alert_users=", ".join(str(u) for u in alert_users(record)),
            error=error,
        )
        return portal_page(t, view)


def _problem(record: PortalRecord) -> tuple[str, str] | None:
    if not record.problem:
        return None
    return record.problem, record.problem_detail or record.problem


def _json_refusal(t: Translator, text: str, *, status: int) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _days(raw: Any) -> tuple[bool, float | None]:
    """The link form's `history_days`: (readable, days), days None when not given;
    unreadable when it is no number of days from 0 to 366."""
    text = as_str(raw)
    if text is None or not text.strip():
        return True, None
    try:
        days = float(text)
    except ValueError:
        return False, None
    return (True, days) if 0 <= days <= 366 else (False, None)


def _options(raw: Any) -> dict[str, Any]:
    """PLACEMENT_OPTIONS: a JSON string (or, from some tools, already a form array)."""
    if isinstance(raw, dict):
        return {str(k).upper(): v for k, v in raw.items()}
    text = as_str(raw)
    if not text or len(text) > 10_000:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return {str(k).upper(): v for k, v in as_dict(data).items()}
