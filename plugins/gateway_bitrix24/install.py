"""App installation, both ways it arrives, and what it leaves in the store.

* An app with a UI: Bitrix24 opens the install page in an iframe with a POST carrying
  `AUTH_ID`, `REFRESH_ID`, `APPLICATION_TOKEN`, `member_id`... The answer is a page that calls
  `BX24.installFinish()`; until then Bitrix24 sends no events.
* An API-only app: Bitrix24 POSTs the `ONAPPINSTALL` event with both tokens in `auth[...]`.

* A new version of the app: Bitrix24 POSTs `ONAPPUPDATE` to the events URL with a NEW
  `application_token` (and the updating admin's tokens), handled like `ONAPPINSTALL`.
* A reinstall (uninstall, then install) arrives as one of the first two, with a new token.

Anyone can POST such a form, and any employee who opens an app page holds a valid
`REFRESH_ID`, so nothing in it is trusted as is: the refresh token is traded at the OAuth
server with this app's client secret first (only a token Bitrix24 issued to this app
survives that, and the answer names the portal: `member_id`, `client_endpoint`), then the
fresh access token, which belongs to the same user, must get `true` from `user.admin` on
that portal. Only then are the tokens and the `application_token` stored; a refused attempt
keeps the stored record and is logged. `APP_SID` (a per-render session id) is never the
application token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import (
    DeliveryError,
    TemporaryError,
    Unauthorized,
    WebhookError,
    WebhookResult,
    normalize_language,
)

from .events import PortalEvent
from .forms import as_dict, as_str
from .oauth import Grant, OAuthClient
from .pages import install_page, message_page
from .records import PortalRecord, PortalStore
from .rest import RestClient
from .setup import PortalSetup
from .texts import translator

log = logging.getLogger("gateway.bitrix24")

LinesOf = Callable[[str], Awaitable[dict[int, str]]]
#: Told the member_id of a portal just installed or set up again.
Changed = Callable[[str], Awaitable[None]]


class Installer:
    def __init__(
        self,
        oauth: OAuthClient,
        rest: RestClient,
        store: PortalStore,
        setup: PortalSetup,
        lines_of: LinesOf,
        *,
        allowed_portals: frozenset[str] = frozenset(),
        on_change: Changed | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.oauth = oauth
        self.rest = rest
        self.store = store
        self.setup = setup
        self.lines_of = lines_of
        self.allowed = allowed_portals
        self.on_change = on_change
        self.clock = clock

    async def from_page(self, form: dict[str, Any], lang: str | None = None) -> WebhookResult:
        """The install page POST of an app with a UI; `lang` is the query's `LANG`."""
        refresh = as_str(form.get("REFRESH_ID"))
        application_token = as_str(form.get("APPLICATION_TOKEN"))
        member_id = as_str(form.get("member_id"))
        t = translator(lang)
        if not (refresh and application_token and member_id):
            page = message_page(t, t.gettext("install.not_from_bitrix24"), status=400)
            return WebhookResult(response=page)
        try:
            record = await self.install(
                refresh_token=refresh,
                server_endpoint=as_str(form.get("SERVER_ENDPOINT")),
                application_token=application_token,
                member_id=member_id,
                scope=as_str(form.get("APPLICATION_SCOPE")) or "",
                # The installing admin's language: the portal's until app.info says otherwise.
                language=lang,
            )
        except WebhookError as exc:
            text = t.gettext("install.refused", reason=exc.message)
            return WebhookResult(response=message_page(t, text, status=exc.status))
        error = await self.run_setup(record.member_id)
        t = translator(lang, record.language)
        return WebhookResult(response=install_page(t, record.domain, error, record.base_url))

    async def from_event(self, event: PortalEvent) -> WebhookResult:
        """`ONAPPINSTALL` of an API-only app, or `ONAPPUPDATE` (also on the events URL)."""
        auth = event.auth
        refresh = as_str(auth.get("refresh_token"))
        application_token = as_str(auth.get("application_token"))
        if not (refresh and application_token):
            log.warning(
                "%s for portal %s without the installing admin's tokens: refused, the stored "
                "application token (if any) is kept",
                event.name,
                event.member_id,
            )
            raise Unauthorized(f"{event.name} without refresh_token or application_token")
        record = await self.install(
            refresh_token=refresh,
            server_endpoint=as_str(auth.get("server_endpoint")),
            application_token=application_token,
            member_id=event.member_id,
            scope=as_str(auth.get("scope")) or "",
            language=as_str(as_dict(event.data).get("LANGUAGE_ID")),
        )
        error = await self.run_setup(record.member_id)
        if error:
            log.warning("setup of %s after %s failed: %s", record.domain, event.name, error)
        return WebhookResult()

    async def install(
        self,
        *,
        refresh_token: str,
        server_endpoint: str | None,
        application_token: str,
        member_id: str | None,
        scope: str,
        language: str | None = None,
    ) -> PortalRecord:
        try:
            grant = await self.oauth.refresh(refresh_token, server_endpoint)
        except TemporaryError as exc:
            raise WebhookError(
                f"the OAuth server could not be asked to confirm the install ({exc.code}); "
                "try again",
                status=503,
            ) from None
        except DeliveryError as exc:
            raise Unauthorized(
                f"the OAuth server did not confirm the install's tokens ({exc.code})", status=403
            ) from None
        if member_id is not None and grant.member_id != member_id:
            raise Unauthorized("the tokens belong to another portal", status=403)
        record = self._record(grant, server_endpoint, application_token, scope)
        record.language = normalize_language(language) or ""
        if self.allowed and not {record.member_id, record.domain} & self.allowed:
            raise Unauthorized(
                f"this gateway does not serve the portal {record.domain} (see allowed_portals)",
                status=403,
            )
        await self._confirm_admin(record)
        async with self.store.lock(record.member_id):
            stored = await self.store.get(record.member_id, fresh=True)
            await self.store.put(record)
        if stored is not None and stored.application_token != application_token:
            log.warning(
                "portal %s (%s) was reinstalled by an administrator: its application token "
                "is replaced",
                record.domain,
                record.member_id,
            )
        log.info("installed on portal %s (%s)", record.domain, record.member_id)
        if self.on_change is not None:
            await self.on_change(record.member_id)
        return record

    async def _confirm_admin(self, record: PortalRecord) -> None:
        """Ask the portal whether the install's user is an administrator (`user.admin`)."""
        try:
            admin = await self.rest.ask_as(record, "user.admin", record.access_token)
        except TemporaryError as exc:
            raise WebhookError(
                f"{record.domain} could not be asked to confirm the install ({exc.code}); "
                "try again",
                status=503,
            ) from None
        except DeliveryError as exc:
            admin = exc.code
        if not _is_true(admin):
            log.warning(
                "refused an install POST for portal %s (%s): Bitrix24 did not confirm an "
                "administrator (user.admin: %s); the stored application token is kept",
                record.domain,
                record.member_id,
                admin,
            )
            raise Unauthorized(
                "only a Bitrix24 administrator can install or reinstall the app", status=403
            )

    def _record(
        self, grant: Grant, server_endpoint: str | None, application_token: str, scope: str
    ) -> PortalRecord:
        return PortalRecord(
            member_id=grant.member_id,
            client_endpoint=grant.client_endpoint,
            server_endpoint=grant.server_endpoint or server_endpoint or "",
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            application_token=application_token,
            expires_at=grant.expires_at,
            scope=scope,
            status=grant.status,
            installed_at=self.clock(),
            refreshed_at=self.clock(),
        )

    async def run_setup(self, member_id: str) -> str | None:
        """Register the connector, bind events, re-activate known lines; the error if any."""
        error: str | None = None
        try:
            await self.setup.run(member_id, await self.lines_of(member_id))
        except DeliveryError as exc:
            error = str(exc)

        def note(record: PortalRecord) -> None:
            record.setup_error = error

        await self.store.update(member_id, note)
        if self.on_change is not None:
            await self.on_change(member_id)
        return error


def _is_true(value: Any) -> bool:
    """A REST boolean: JSON `true`, or the strings PHP-style transports make of it."""
    return value is True or value in ("true", "1", "Y")
