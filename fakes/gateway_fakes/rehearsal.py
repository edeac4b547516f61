"""`gateway rehearse`: every fake a Bitrix24 setup talks to, in real processes, offline.

It starts, on loopback: a fake Bitrix24 portal with its OAuth server over https (a
certificate from a CA made for this run, see `tls.py`), and a fake WhatsApp number of each
provider (Cloud API, Chat API, GREEN-API); then it writes a ready `settings.toml` (and
`.secrets.toml`) for the gateway (`rehearsal_text.py`). In another terminal,
`gateway run --settings DIR/settings.toml` starts the gateway, and the commands printed here
install the app, link the numbers to open lines and play both sides of a conversation, all
through real HTTP between real processes.

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
import time
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

from gateway_fakes.rehearsal_text import MARK, instructions, write_settings
from gateway_fakes.tls import Certificates, make_certificates

__all__ = ["MARK", "prepare_directory", "rehearse"]

LINE = 1
WAIT_LIMIT = 60.0
#: The numbers of a rehearsal, one per fake WhatsApp provider, linked to lines 1, 2, 3.
CHANNELS = ("wa", "wa_chatapi", "wa_green")
#: Seconds between the Chat API and GREEN-API fakes' webhook pushes (as the services do).
PUSH_EVERY = 0.5
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
            # Chat ids are the connector's: a number, or `79…@c.us` for some providers.
            return [m for m in portal.messages() if m.chat_id.split("@")[0] == chat]

        done = await watched.until(lambda: len(chat_messages()) >= count, timeout)
        rows = [
            {"chat_id": m.chat_id, "line": m.line, "author": m.author, "text": m.text}
            for m in chat_messages()
        ]
        return JSONResponse({"done": done, "messages": rows}, status_code=200 if done else 408)

    extra = [
        Route("/_fake/link", link, methods=["POST"]),
        Route("/_fake/wait", wait, methods=["GET"]),
    ]
    app = Starlette(routes=[*extra, *control.routes(portal), *portal.app.routes])
    watched = Watched(app)
    return watched


def sent_app(app: Starlette, sent: Callable[[], list[tuple[str, str]]]) -> Watched:
    """A fake WhatsApp provider plus `GET /_fake/wait?to=…&count=N`: until N messages were
    sent to that number (`sent` lists (recipient, text) of what the gateway sent)."""

    async def wait(request: Request) -> Response:
        count, timeout = _limit(request)
        to = request.query_params.get("to", "")

        def rows() -> list[dict[str, str]]:
            return [{"to": who, "text": text} for who, text in sent() if to in who]

        done = await watched.until(lambda: len(rows()) >= count, timeout)
        return JSONResponse({"done": done, "messages": rows()}, status_code=200 if done else 408)

    routes = [Route("/_fake/wait", wait, methods=["GET"]), *app.routes]
    watched = Watched(Starlette(routes=routes, lifespan=app.router.lifespan_context))
    return watched


@dataclass(frozen=True, slots=True)
class Fakes:
    """The fakes of one rehearsal and where they listen."""

    portal: Any
    cloudapi: Any
    chatapi: Any
    greenapi: Any
    urls: dict[str, str]  # portal, cloudapi, chatapi, greenapi, gateway


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
    app: ASGIApp, sock: socket.socket, tls: Certificates | None = None
) -> AsyncIterator[None]:
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on"}
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


def make_fakes(urls: dict[str, str]) -> Fakes:
    """Every fake, told where it and the gateway listen (`urls`)."""
    from gateway_fakes.bitrix24 import FakePortal
    from gateway_fakes.chatapi import FakeChatApi
    from gateway_fakes.cloudapi import FakeCloudApi
    from gateway_fakes.greenapi import FakeGreenApi
    from gateway_fakes.greenapi.model import ALL_NOTIFICATIONS_ON

    portal = FakePortal(
        domain=urls["portal"].removeprefix("https://"),
        scheme="https",
        server_endpoint=f"{urls['portal']}/rest/",
        installed=False,
        auto_flush=True,
        rate=None,
    )
    for name in CHANNELS[1:]:  # line 1 exists; one line per number
        portal.add_line(f"WhatsApp ({name})")
    cloudapi = FakeCloudApi(callback_url=f"{urls['gateway']}/webhooks/wa")
    cloudapi.media_base_url = urls["cloudapi"]
    # The other two push their webhooks themselves, to where the gateway points them.
    chatapi = FakeChatApi(token=secrets.token_hex(8), clock=time.time, host=urls["chatapi"])
    greenapi = FakeGreenApi(
        api_token=secrets.token_hex(12),
        clock=time.time,
        host=urls["greenapi"],
        settings=ALL_NOTIFICATIONS_ON,
    )
    for fake in (chatapi, greenapi):
        fake.faults.timeout_behaviour = "hang"  # over a socket, as their standalone mains
    return Fakes(portal, cloudapi, chatapi, greenapi, urls)


def _apps(fakes: Fakes) -> dict[str, ASGIApp]:
    cloud, chat, green = fakes.cloudapi, fakes.chatapi, fakes.greenapi
    return {
        "portal": portal_app(fakes.portal),
        "cloudapi": sent_app(cloud.app, lambda: [(m.to, m.text or m.type) for m in cloud.sent]),
        "chatapi": sent_app(
            chat.make_app(deliver_every=PUSH_EVERY),
            lambda: [(m.chat_id, m.body) for m in chat.sent],
        ),
        "greenapi": sent_app(
            green.make_app(deliver_every=PUSH_EVERY),
            lambda: [(m.chat_id, str(m.params.get("message", ""))) for m in green.sent],
        ),
    }


async def rehearse(
    directory: Path,
    *,
    gateway_port: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Start the fakes, write the settings into `directory` (absolute: the settings name
    files by it), print the steps; serve until cancelled."""
    certificates = make_certificates(directory / "tls")
    port = gateway_port or _free_port()
    names = ("portal", "cloudapi", "chatapi", "greenapi")
    with contextlib.ExitStack() as sockets:
        bound = {name: sockets.enter_context(_bound()) for name in names}
        urls = {
            name: f"{'https' if name == 'portal' else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
            for name, sock in bound.items()
        }
        urls["gateway"] = f"http://127.0.0.1:{port}"
        fakes = make_fakes(urls)
        token = secrets.token_urlsafe(16)
        settings = write_settings(directory, port, fakes, certificates, token)
        apps = _apps(fakes)
        async with contextlib.AsyncExitStack() as serving:
            for name in names:
                tls = certificates if name == "portal" else None
                await serving.enter_async_context(_serve(apps[name], bound[name], tls))
            out.write(instructions(directory, settings, certificates, urls, token))
            out.flush()
            try:
                await asyncio.Event().wait()
            finally:
                await fakes.portal.aclose()
    return 0
