"""`FakePortal`: one Bitrix24 portal with our app installed, plus its OAuth server."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
from starlette.applications import Starlette

from . import crm, operator, rest
from . import install as installing
from .batch import run as run_batch
from .envelope import OPERATING_WINDOW, CallContext, RestError, system_error, time_block
from .events import event_form, post_form
from .faults import Faults
from .formdata import as_list
from .limits import LeakyBucket
from .methods import METHODS, scope_of
from .oauth import TokenPair, TokenStore, oauth_app, server_host
from .state import (
    AppRecord,
    ChatMessage,
    Emission,
    EventDelivery,
    OpenLine,
    PortalState,
    RestCall,
)

FileStyle = Literal["link", "downloadLink", "both"]


class FakePortal:
    """A Bitrix24 portal for tests and demos; see the package docstring for a tour.

    Besides the app identity (`domain`, `member_id`, `client_id`, `client_secret`,
    `application_token`, `scope`) and `rate`/`burst` (None disables the bucket):
    `clock` drives token expiry, the bucket and blocks; `epoch` pins unix time
    (`now() == epoch + clock()`); `http` reaches the app for events, install, placements
    and file fetches; `server_endpoint`/`scheme` shape the URLs handed out;
    `installed=False` starts without the app; `token_prefix` keeps tokens of several
    portals apart; `file_style` picks operator file links (`link`, `downloadLink`, `both`);
    `fetch_files` makes `send.messages` download `files[].url` and drop failures;
    `auto_flush` delivers REST-caused events right after each answer.

    Attributes tests may flip: `installed_finished`, `report_sessions` (omit `session`
    from send results), `event_tokens` (events without access tokens), `file_style`,
    `fetch_files`, `scope`, `app_record` (what `app.info` says), `faults`, `admins` (the
    user ids `user.admin` answers true for; user 1 installs, operators such as 27 are not).
    """

    def __init__(
        self,
        *,
        domain: str = "acme.bitrix24.com",
        member_id: str = "a223c6b3710f85df22e9377d6c4f7553",
        client_id: str = "app.573ad8a0346747.09223434",
        client_secret: str = "fake-client-secret",  # noqa: S107 - a fake's well-known value
        application_token: str = "ec1b2074a9d3f5c81b6e40d27a95cf38",  # noqa: S107
        rate: float | None = 2.0,
        burst: int = 50,
        clock: Callable[[], float] = time.monotonic,
        http: httpx.AsyncClient | None = None,
        token_ttl: int = 3600,
        server_endpoint: str = "https://oauth.bitrix.info/rest/",
        scheme: str = "https",
        scope: str = "imopenlines,imconnector,im,placement,messageservice,bizproc",
        installed: bool = True,
        token_prefix: str = "",
        file_style: FileStyle = "both",
        fetch_files: bool = False,
        auto_flush: bool = False,
        epoch: float | None = None,
    ) -> None:
        self.domain = domain
        self.member_id = member_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.application_token = application_token
        self.server_endpoint = server_endpoint
        self.scheme = scheme
        self.scope = scope
        self.clock = clock
        self.http = http
        self.installed = installed
        self.installed_finished = installed
        self.file_style: FileStyle = file_style
        self.fetch_files = fetch_files
        self.auto_flush = auto_flush
        self.report_sessions = True
        self.event_tokens = True
        self.app_record = AppRecord()
        self.admins: set[int] = {1}
        self.state = PortalState()
        self.crm = crm.CrmState()
        self.tokens = TokenStore(clock, token_ttl, token_prefix)
        self.faults = Faults(clock)
        self.bucket = LeakyBucket(rate, burst, clock) if rate is not None else None
        self.calls: list[RestCall] = []
        self.deliveries: list[EventDelivery] = []
        self.pending: list[tuple[str, Any]] = []
        self.moved_from: set[str] = set()
        self.app_sids = 0
        self._epoch = epoch if epoch is not None else time.time() - clock()
        self._own_http: httpx.AsyncClient | None = None
        self.add_line("Open Channel")
        self.oauth_app = oauth_app(lambda: [self])
        self.app = Starlette(routes=[*rest.routes(self), *self.oauth_app.routes])

    # -- addresses and time -------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.domain}"

    @property
    def client_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def oauth_token_url(self) -> str:
        return self.server_endpoint.removesuffix("rest/") + "oauth/token/"

    def now(self) -> float:
        """Unix time on the portal clock."""
        return self._epoch + self.clock()

    def unix(self, clock_time: float) -> float:
        return self._epoch + clock_time

    def time_block(self, started: float) -> dict[str, Any]:
        return time_block(started, self.now(), operating_reset_at=self.now() + OPERATING_WINDOW)

    def move_domain(self, new_domain: str) -> None:
        """The portal was renamed: the old domain now answers 302 to the new one."""
        self.moved_from.add(self.domain)
        self.moved_from.discard(new_domain)
        self.domain = new_domain

    # -- tokens ---------------------------------------------------------------

    def issue_tokens(self, user_id: int = 1) -> TokenPair:
        """A fresh token pair, as if an admin had just opened the app."""
        return self.tokens.issue(user_id)

    def authorize(self, user_id: int = 1) -> str:
        """An authorization code (lives 30 s) for the `authorization_code` grant."""
        return self.tokens.issue_code(user_id)

    def expire_tokens(self) -> None:
        self.tokens.expire()

    def token_response(self, pair: TokenPair) -> dict[str, Any]:
        return {
            "access_token": pair.access_token,
            "expires": int(self.unix(pair.expires_at)),
            "expires_in": pair.expires_in,
            "scope": "app",
            "domain": server_host(self.server_endpoint),
            "server_endpoint": self.server_endpoint,
            "status": self.app_record.status,
            "client_endpoint": self.client_endpoint,
            "member_id": self.member_id,
            "user_id": pair.user_id,
            "refresh_token": pair.refresh_token,
        }

    def event_auth(
        self,
        user_id: int = 1,
        *,
        tokens: bool = True,
        pair: TokenPair | None = None,
        with_refresh: bool = False,
    ) -> dict[str, Any]:
        """The `auth` block of an event; without tokens as for uninstall/robots."""
        auth: dict[str, Any] = {}
        if tokens:
            pair = pair or self.tokens.issue(user_id)
            auth = {
                "access_token": pair.access_token,
                "expires": int(self.unix(pair.expires_at)),
                "expires_in": pair.expires_in,
                "scope": self.scope,
            }
            if with_refresh:
                auth["refresh_token"] = pair.refresh_token
        auth["domain"] = self.domain
        auth["server_endpoint"] = self.server_endpoint
        if tokens:
            auth["status"] = self.app_record.status
        auth["client_endpoint"] = self.client_endpoint
        auth["member_id"] = self.member_id
        if tokens:
            auth["user_id"] = user_id
        auth["application_token"] = self.application_token
        return auth

    # -- REST core --------------------------------------------------------------

    def authenticate(self, token: str | None, *, webhook: bool) -> CallContext:
        if webhook:
            return CallContext(token=None, user_id=1, app_context=False)
        if not token:
            raise system_error("NO_AUTH_FOUND")
        return CallContext(token=token, user_id=self.tokens.check(token).user_id)

    def operation_limit(self, until: float) -> RestError:
        block = self.time_block(self.now())
        block["operating_reset_at"] = int(self.unix(until))
        return RestError(
            429,
            "OPERATION_TIME_LIMIT",
            "Method is blocked due to operation time limit.",
            time=block,
        )

    async def invoke(self, method: str, params: dict[str, Any], ctx: CallContext) -> Any:
        """Run one method (HTTP or batch sub-call) after scope and time-limit checks."""
        if method == "batch":
            return await run_batch(self, params, ctx)
        handler = METHODS.get(method)
        if handler is None:
            raise system_error("ERROR_METHOD_NOT_FOUND")
        scope = scope_of(method)
        if ctx.app_context and scope and scope not in self.scope.replace(" ", "").split(","):
            raise system_error("insufficient_scope")
        until = self.faults.blocked_until(method)
        if until is not None:
            raise self.operation_limit(until)
        return await handler(self, params, ctx)

    def client(self) -> httpx.AsyncClient:
        """The client used to reach the app (events, install, placement, file fetches)."""
        if self.http is not None:
            return self.http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient(timeout=10.0)
        return self._own_http

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None

    async def fetch_file(self, file: dict[str, Any]) -> bool:
        """Download an incoming file like Bitrix does; failures are silently dropped."""
        if not self.fetch_files:
            return True
        url = file.get("url")
        if not isinstance(url, str):
            return False
        headers = {
            str(h.get("name")): str(h.get("value"))
            for h in as_list(file.get("headers")) or []
            if isinstance(h, dict)
        }
        headers["User-Agent"] = "Bitrix Connector Client"
        try:
            response = await self.client().get(url, headers=headers, follow_redirects=True)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # -- state helpers -------------------------------------------------------------

    def add_line(self, name: str = "Open Channel", *, active: bool = True, **settings: Any) -> int:
        """Create an open line; returns its id."""
        line_id = next(self.state.line_ids)
        self.state.lines[line_id] = OpenLine(line_id, name, active, dict(settings))
        return line_id

    def remove_line(self, line_id: int) -> None:
        self.state.lines.pop(line_id, None)
        for key in [k for k in self.state.statuses if k[1] == line_id]:
            del self.state.statuses[key]

    def calls_to(self, method: str, *, include_batch: bool = True) -> list[RestCall]:
        name = method.lower()
        return [
            c for c in self.calls if c.method == name and (include_batch or c.batch_key is None)
        ]

    def messages(
        self,
        *,
        line: int | None = None,
        chat_id: str | None = None,
        connector: str | None = None,
        include_deleted: bool = False,
    ) -> list[ChatMessage]:
        """The chat as an operator sees it, oldest first."""
        return [
            m
            for m in self.state.messages
            if (line is None or m.line == line)
            and (chat_id is None or m.chat_id == str(chat_id))
            and (connector is None or m.connector == connector)
            and (include_deleted or not m.deleted)
        ]

    # -- events ------------------------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        *,
        handler: str | None = None,
        user_id: int = 1,
        tokens: bool | None = None,
    ) -> list[EventDelivery]:
        """POST `event` to every handler bound for it (or just `handler`), once each.

        Nothing is sent while the install is unfinished, like Bitrix. `tokens=False`
        leaves access tokens out of `auth` (default: `event_tokens`).
        """
        name = event.upper()
        with_tokens = self.event_tokens if tokens is None else tokens
        bound = [b for b in self.state.bindings if b.event == name and not b.offline]
        if handler is not None:
            ids = [b.id for b in bound if b.handler == handler]
            targets = [(handler, ids[0] if ids else None, 0)]
        elif not (self.installed and self.installed_finished):
            return []
        else:
            targets = [(b.handler, b.id, b.auth_type) for b in bound]
        delivered = []
        for url, handler_id, auth_type in targets:
            auth = self.event_auth(auth_type or user_id, tokens=with_tokens)
            form = event_form(name, handler_id, data, int(self.now()), auth)
            delivered.append(await post_form(self.client(), url, form, name))
        self.deliveries.extend(delivered)
        return delivered

    def queue_event(self, event: str, data: Any) -> None:
        """Events caused by REST calls wait here until `flush()` (or auto_flush)."""
        self.pending.append((event, data))

    async def flush(self) -> list[EventDelivery]:
        delivered: list[EventDelivery] = []
        while self.pending:
            event, data = self.pending.pop(0)
            delivered += await self.emit(event, data)
        return delivered

    # -- people in the UI --------------------------------------------------------------

    async def operator_writes(
        self,
        line: int,
        chat_id: str,
        text: str,
        *,
        files: Sequence[operator.FileSpec] | None = None,
        operator_name: str = "Anna",
        operator_id: int = 27,
        signature: bool = True,
        connector: str | None = None,
        quote: ChatMessage | None = None,
    ) -> Emission:
        """An operator replies in the chat: ONIMCONNECTORMESSAGEADD.

        `files` items are names or `{"name", "content": bytes, "mime"}`; the portal
        serves them at the `link`/`downloadLink` it puts in the event. `quote`: the
        operator used *Quote* on that message (its text in a hyphen block before theirs).
        """
        return await operator.writes(
            self,
            line,
            chat_id,
            text,
            files=files,
            operator_name=operator_name,
            operator_id=operator_id,
            signature=signature,
            connector=connector,
            quote=quote,
        )

    async def operator_edits(
        self,
        message: ChatMessage | int,
        text: str,
        *,
        operator_name: str = "Anna",
        signature: bool = True,
    ) -> Emission:
        """ONIMCONNECTORMESSAGEUPDATE — only for messages acked with external ids."""
        return await operator.edits(
            self, message, text, operator_name=operator_name, signature=signature
        )

    async def operator_deletes(self, message: ChatMessage | int) -> Emission:
        """ONIMCONNECTORMESSAGEDELETE — one item per external id of an acked message."""
        return await operator.deletes(self, message)

    async def dialog_start(
        self, line: int, chat_id: str, *, connector: str | None = None
    ) -> Emission:
        return await operator.dialog(self, line, chat_id, connector, finish=False)

    async def dialog_finish(
        self, line: int, chat_id: str, *, connector: str | None = None
    ) -> Emission:
        return await operator.dialog(self, line, chat_id, connector, finish=True)

    async def disconnect_line(self, line: int, *, connector: str | None = None) -> Emission:
        """Admin presses "Disconnect": ONIMCONNECTORSTATUSDELETE (lower-case keys)."""
        return await operator.disconnect(self, line, connector)

    async def delete_line(self, line: int) -> Emission:
        """Admin deletes the open line: ONIMCONNECTORLINEDELETE with scalar data."""
        return await operator.delete_line(self, line)

    # -- the CRM ------------------------------------------------------------------------

    async def send_sms(
        self, code: str, phone: str, text: str, *, user_id: int = 1
    ) -> tuple[crm.SmsMessage, httpx.Response]:
        """A manager sends a message from a CRM card through sender `code`."""
        return await crm.send_sms(self, code, phone, text, user_id=user_id)

    async def run_robot(
        self, code: str, properties: dict[str, Any], *, user_id: int = 1
    ) -> tuple[crm.RobotRun, httpx.Response]:
        """An automation rule runs robot `code`; its `returned` fills on bizproc.event.send."""
        return await crm.run_robot(self, code, properties, user_id=user_id)

    # -- install, placements, uninstall ------------------------------------------------

    async def install(
        self, install_url: str, *, ui: bool = True, user_id: int = 1
    ) -> httpx.Response:
        """UI app: POST the install page (finish with `finish_install()`).
        API-only app: POST ONAPPINSTALL with both tokens to `install_url`."""
        return await installing.install(self, install_url, ui=ui, user_id=user_id)

    async def update_app(self, application_token: str, *, user_id: int = 1) -> EventDelivery:
        """An admin installs a new app version: a new application token, sent in
        ONAPPUPDATE with the admin's tokens to the bound handler."""
        self.application_token = application_token
        self.app_record.version += 1
        data = {"VERSION": str(self.app_record.version), "PREVIOUS_VERSION": "1"}
        auth = self.event_auth(user_id, with_refresh=True)
        bound = [b for b in self.state.bindings if b.event == "ONAPPUPDATE"]
        handler = bound[0].handler if bound else ""
        form = event_form(
            "ONAPPUPDATE", bound[0].id if bound else None, data, int(self.now()), auth
        )
        delivery = await post_form(self.client(), handler, form, "ONAPPUPDATE")
        self.deliveries.append(delivery)
        return delivery

    def finish_install(self) -> None:
        """What `BX24.installFinish()` would do; events start flowing."""
        self.installed_finished = True

    async def open_placement(
        self,
        handler_url: str,
        placement: str = "SETTING_CONNECTOR",
        options: dict[str, Any] | None = None,
        *,
        user_id: int = 1,
    ) -> httpx.Response:
        """POST `handler_url` as the placement iframe does. For SETTING_CONNECTOR the
        options default to the status of CONNECTOR/LINE (given ones win)."""
        given = dict(options or {})
        if placement == "SETTING_CONNECTOR":
            line = int(given.get("LINE", 1))
            connector = str(
                given.get("CONNECTOR") or operator.resolve_connector(self, line, None).id
            )
            given = {**installing.connector_options(self, connector, line), **given}
        return await installing.open_frame(self, handler_url, placement, given, user_id)

    async def open_connector_settings(
        self, line: int = 1, *, connector: str | None = None, activate: bool = True
    ) -> httpx.Response:
        """Admin clicks the tile and picks `line`: Bitrix's form marks the line active,
        then opens the connector's PLACEMENT_HANDLER."""
        owner = operator.resolve_connector(self, line, connector)
        if activate:
            self.state.status(owner.id, line).active = True
        options = installing.connector_options(self, owner.id, line)
        return await installing.open_frame(
            self, owner.placement_handler, "SETTING_CONNECTOR", options, 1
        )

    def connector_settings_frame(
        self, line: int = 1, *, connector: str | None = None, user_id: int = 1
    ) -> tuple[str, dict[str, str]]:
        """What `open_connector_settings` POSTs, for a browser to submit: (URL, form)."""
        owner = operator.resolve_connector(self, line, connector)
        self.state.status(owner.id, line).active = True
        options = installing.connector_options(self, owner.id, line)
        return installing.frame_request(
            self, owner.placement_handler, "SETTING_CONNECTOR", options, user_id
        )

    async def uninstall(self, *, clean: bool = True) -> list[EventDelivery]:
        """ONAPPUNINSTALL (auth without tokens), then connectors, handlers and tokens go."""
        return await installing.uninstall(self, clean=clean)
