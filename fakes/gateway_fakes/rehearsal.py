"""`gateway rehearse`: every fake a Bitrix24 setup talks to, in real processes, offline.

It starts, on loopback: a fake Bitrix24 portal with its OAuth server over https (a
certificate from a CA made for this run, see `tls.py`) and a fake WhatsApp Cloud API number,
then writes a ready `settings.toml` (and `.secrets.toml`) for the gateway. In another
terminal, `gateway run --settings DIR/settings.toml` starts the gateway, and the commands
printed here install the app, link the number to an open line and play both sides of a
conversation, all through real HTTP between real processes.

The settings are a rehearsal's, and say so: `allow_local_public_url` (the fakes call the
gateway on 127.0.0.1 over plain http) and `ca_file` (the gateway trusts this run's CA).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_fakes.tls import Certificates, make_certificates

LINE = 1
WAIT_LIMIT = 60.0
MARK = "# Written by `gateway rehearse`"
#: What a rehearsal writes in its folder: removed before the next one starts afresh.
OWN = ("settings.toml", ".secrets.toml", "gateway.db", "gateway.db-wal", "gateway.db-shm")
OWN_FOLDERS = ("media", "tls")


def prepare_directory(directory: Path) -> str | None:
    """Make `directory` ready for a fresh rehearsal (an earlier one's store would hold the
    tokens of a portal that no longer exists); a problem when it holds anything else."""
    if directory.exists() and any(directory.iterdir()):
        settings = directory / "settings.toml"
        if not (settings.is_file() and settings.read_text().startswith(MARK)):
            return f"{directory} is not empty and not a rehearsal's: choose --directory"
        for name in OWN:
            (directory / name).unlink(missing_ok=True)
        for name in OWN_FOLDERS:
            shutil.rmtree(directory / name, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return None


class Watched:
    """ASGI wrapper that wakes the `/_fake/wait` long polls after each request it serves:
    a fake's state changes when the gateway calls it, so waiting needs no polling."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.changed = asyncio.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                async with self.changed:
                    self.changed.notify_all()

    async def until(self, predicate: Callable[[], bool], within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(predicate)
        return predicate()


def _limit(request: Request) -> tuple[int, float]:
    query = request.query_params
    count = int(query.get("count", "1")) if query.get("count", "1").isdigit() else 1
    try:
        timeout = min(max(float(query.get("timeout", "20")), 0.0), WAIT_LIMIT)
    except ValueError:
        timeout = 20.0
    return count, timeout


def portal_app(portal: Any) -> Watched:
    """The portal's REST, OAuth and `/_fake/*` control API, plus what a rehearsal adds:
    `POST /_fake/link` (the admin links a number on the settings page) and
    `GET /_fake/wait?chat_id=…&count=N` (until the chat has N messages)."""
    from gateway_fakes.bitrix24 import control
    from gateway_fakes.bitrix24.browser import form_fields

    async def link(request: Request) -> Response:
        raw = await request.body()
        data = json.loads(raw) if raw else {}
        line, channel = int(data.get("line", LINE)), str(data.get("channel", "wa"))
        page = await portal.open_connector_settings(line)
        if page.status_code != 200:
            return JSONResponse({"settings_page": page.status_code}, status_code=502)
        try:
            fields = form_fields(page.text, "link", channel)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        handler = str(page.request.url)
        linked = await portal.client().post(handler, data=fields)
        return JSONResponse({"line": line, "channel": channel, "status": linked.status_code})

    async def wait(request: Request) -> Response:
        count, timeout = _limit(request)
        chat = request.query_params.get("chat_id")

        def chat_messages() -> list[Any]:
            return list(portal.messages(chat_id=chat))

        done = await watched.until(lambda: len(chat_messages()) >= count, timeout)
        rows = [{"author": m.author, "text": m.text} for m in chat_messages()]
        return JSONResponse({"done": done, "messages": rows}, status_code=200 if done else 408)

    extra = [
        Route("/_fake/link", link, methods=["POST"]),
        Route("/_fake/wait", wait, methods=["GET"]),
    ]
    app = Starlette(routes=[*extra, *control.routes(portal), *portal.app.routes])
    watched = Watched(app)
    return watched


def whatsapp_app(fake: Any) -> Watched:
    """The fake Cloud API with its `/_fake/*` control API, plus
    `GET /_fake/wait?to=…&count=N` (until N messages were sent to that number)."""

    async def wait(request: Request) -> Response:
        count, timeout = _limit(request)
        to = request.query_params.get("to")

        def sent() -> list[Any]:
            return [m for m in fake.sent if to is None or to in (m.to, m.wa_id)]

        done = await watched.until(lambda: len(sent()) >= count, timeout)
        rows = [{"id": m.id, "type": m.type, "text": m.text} for m in sent()]
        return JSONResponse({"done": done, "messages": rows}, status_code=200 if done else 408)

    watched = Watched(Starlette(routes=[Route("/_fake/wait", wait), *fake.app.routes]))
    return watched


@dataclass(frozen=True, slots=True)
class Rehearsal:
    directory: Path
    settings: Path
    certificates: Certificates
    gateway_url: str
    portal_url: str
    whatsapp_url: str
    admin_token: str


@contextlib.contextmanager
def _bound(port: int = 0) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def _serve(
    app: ASGIApp, sock: socket.socket, tls: Certificates | None
) -> AsyncIterator[None]:
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
    if tls is not None:
        options |= {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    server = uvicorn.Server(uvicorn.Config(app, timeout_graceful_shutdown=1, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task


def _free_port() -> int:
    with _bound() as sock:
        port: int = sock.getsockname()[1]
        return port


async def rehearse(
    directory: Path,
    *,
    gateway_port: int | None = None,
    out: TextIO = sys.stdout,
    ready: Callable[[Rehearsal], Any] | None = None,
) -> int:
    """Start the fakes, write the settings into `directory` (absolute: the settings name
    files by it), print the steps; serve until cancelled."""
    from gateway_fakes.bitrix24 import FakePortal
    from gateway_fakes.cloudapi import FakeCloudApi

    certificates = make_certificates(directory / "tls")
    port = gateway_port or _free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    with _bound() as portal_sock, _bound() as whatsapp_sock:
        portal_url = f"https://127.0.0.1:{portal_sock.getsockname()[1]}"
        whatsapp_url = f"http://127.0.0.1:{whatsapp_sock.getsockname()[1]}"
        host = portal_url.removeprefix("https://")
        portal = FakePortal(
            domain=host,
            scheme="https",
            server_endpoint=f"{portal_url}/rest/",
            installed=False,
            auto_flush=True,
            rate=None,
        )
        whatsapp = FakeCloudApi(callback_url=f"{gateway_url}/webhooks/wa")
        whatsapp.media_base_url = whatsapp_url
        token = secrets.token_urlsafe(16)
        settings = write_settings(
            directory, port, portal, whatsapp, whatsapp_url, certificates, token
        )
        found = Rehearsal(
            directory, settings, certificates, gateway_url, portal_url, whatsapp_url, token
        )
        async with (
            _serve(portal_app(portal), portal_sock, certificates),
            _serve(whatsapp_app(whatsapp), whatsapp_sock, None),
        ):
            out.write(instructions(found))
            out.flush()
            if ready is not None:
                ready(found)
            try:
                await asyncio.Event().wait()
            finally:
                await portal.aclose()
    return 0


def write_settings(
    directory: Path,
    port: int,
    portal: Any,
    whatsapp: Any,
    whatsapp_url: str,
    certificates: Certificates,
    admin_token: str,
) -> Path:
    """`settings.toml` and `.secrets.toml` for `gateway run` against these fakes."""
    settings = directory / "settings.toml"
    settings.write_text(
        f"""{MARK}: a gateway for the fakes it runs, offline.
# Not for production: the two rehearsal-only keys below say why.

public_url = "http://127.0.0.1:{port}"
host = "127.0.0.1"
port = {port}
# REHEARSAL ONLY: the fakes reach the gateway on 127.0.0.1 over plain http, which
# Bitrix24 and Meta would not.
allow_local_public_url = true
# REHEARSAL ONLY: trust the CA made for this run (the fake portal's https certificate).
ca_file = "{certificates.ca}"
log_format = "text"

[store]
url = "sqlite:///{directory / "gateway.db"}"

[media]
directory = "{directory / "media"}"

[fetch]
# Files come from the fakes on loopback.
allowed_hosts = ["127.0.0.1"]

[retry]
base_delay = 0.5
max_delay = 5.0

[workers]
poll_interval = 0.5

[channels.wa]
provider = "cloudapi"
phone_number_id = "{whatsapp.phone_number_id}"
# REHEARSAL ONLY: the fake Cloud API instead of https://graph.facebook.com.
api_base = "{whatsapp_url}"

[crms.b24]
provider = "bitrix24"
client_id = "{portal.client_id}"
connector_id = "whatschat"
connector_name = "WhatsApp (rehearsal)"
# The fake portal's OAuth server, over https with this run's certificate.
oauth_url = "{portal.oauth_token_url}"
# Only this (fake) portal may install the app.
allowed_portals = ["{portal.member_id}"]
"""
    )
    secrets_file = directory / ".secrets.toml"
    secrets_file.write_text(
        f"""{MARK}: the fakes' well-known secrets, this run's admin token.
[admin]
token = "{admin_token}"

[channels.wa]
access_token = "{whatsapp.access_token}"
app_secret = "{whatsapp.app_secret}"
verify_token = "{secrets.token_urlsafe(12)}"

[crms.b24]
client_secret = "{portal.client_secret}"
"""
    )
    secrets_file.chmod(0o600)
    return settings


def instructions(r: Rehearsal) -> str:
    ca = f"--cacert {r.certificates.ca}"
    post = "curl -s -H 'Content-Type: application/json' -X POST"
    customer = "79991234567"
    install = json.dumps({"url": f"{r.gateway_url}/webhooks/b24/install"})
    writes = json.dumps({"wa_id": customer, "text": "Hello! Is my order ready?"})
    answers = json.dumps({"line": LINE, "chat_id": customer, "text": "Yes, it is ready."})
    return f"""
── Bitrix24 rehearsal, offline ───────────────────────────────────────────
   fake Bitrix24 portal + OAuth  {r.portal_url}  (https; CA {r.certificates.ca})
   fake WhatsApp Cloud API       {r.whatsapp_url}
   settings for the gateway      {r.settings}  (+ .secrets.toml beside it)

1. Start the gateway, in another terminal:
   gateway run --settings {r.settings}

2. Bitrix24 installs the app:
   {post} {ca} {r.portal_url}/_fake/install -d '{install}'
   {post} {ca} {r.portal_url}/_fake/finish_install

3. The administrator links the WhatsApp number to open line {LINE}:
   {post} {ca} {r.portal_url}/_fake/link -d '{{"line": {LINE}, "channel": "wa"}}'

4. A customer writes on WhatsApp, and the operator sees it:
   {post} {r.whatsapp_url}/_fake/customer_writes -d '{writes}'
   {post} {r.whatsapp_url}/_fake/deliver
   curl -s {ca} '{r.portal_url}/_fake/wait?chat_id={customer}&count=1'

5. The operator answers, and the customer gets it:
   {post} {ca} {r.portal_url}/_fake/operator_writes -d '{answers}'
   curl -s '{r.whatsapp_url}/_fake/wait?to={customer}&count=1'

   The console: {r.gateway_url}/console/  (admin token: {r.admin_token})
   Everything stays in {r.directory}; delete it when done.

Serving the fakes until Ctrl-C.
"""
