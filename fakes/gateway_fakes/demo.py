"""`gateway demo`: the gateway between a fake Bitrix24 portal and a fake WhatsApp number.

Everything runs in this process on loopback: the gateway on real uvicorn, the fake Cloud API
number and the fake portal beside it. The gateway's calls to the providers' real host names
(graph.facebook.com, acme.bitrix24.com, oauth.bitrix.info) are routed to the fakes by the
test kit's network; the fakes call the gateway over real HTTP, as the real services would.
The script installs the app, links an open line from its settings page, plays a short
conversation both ways, writes first from a CRM card (the SMS provider) and prints what
crossed the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness, Observer, build_gateway, create_app

CUSTOMER = "79991234567"
UNLUCKY = "15550131026"  # the fake Cloud API answers 131026 (no WhatsApp on this number)
NEW_CUSTOMER_TYPED = "8 (916) 555-01-23"  # as a manager types it in a CRM card
NEW_CUSTOMER = "79165550123"
LINE = 1
STEP_TIMEOUT = 20.0


class Trace:
    """Prints what crossed the gateway since the last step, read from the fakes' records."""

    def __init__(self, out: TextIO, portal: Any, whatsapp: Any) -> None:
        self.out = out
        self.portal = portal
        self.whatsapp = whatsapp
        self._portal_seen = 0
        self._whatsapp_seen = 0

    def step(self, title: str) -> None:
        self.out.write(f"\n── {title} " + "─" * max(0, 70 - len(title)) + "\n")

    def say(self, text: str) -> None:
        self.out.write(f"   {text}\n")

    def flush(self) -> None:
        lines: list[tuple[float, str]] = []
        for call in self.portal.calls[self._portal_seen :]:
            if call.batch_key is not None:
                continue
            outcome = "ok" if call.error is None else f"error {call.error}"
            line = f"gateway ─▶ Bitrix24  {call.method}{_portal_detail(call)}  → {outcome}"
            lines.append((call.time, line))
        self._portal_seen = len(self.portal.calls)
        for call in self.whatsapp.calls[self._whatsapp_seen :]:
            if call.host == "graph.facebook.com":
                line = f"gateway ─▶ WhatsApp  {call.method} {call.path}{_wa_detail(call)}"
                lines.append((call.at, line))
        self._whatsapp_seen = len(self.whatsapp.calls)
        for _, line in sorted(lines, key=lambda entry: entry[0]):
            self.say(line)
        self.out.flush()


def _portal_detail(call: Any) -> str:
    params = call.params if isinstance(call.params, dict) else {}
    messages = params.get("MESSAGES")
    if isinstance(messages, list) and messages:
        first = messages[0] if isinstance(messages[0], dict) else {}
        text = (first.get("message") or {}).get("text", "") if isinstance(first, dict) else ""
        files = len((first.get("message") or {}).get("files") or [])
        more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
        shown = f' "{_short(str(text))}"' if text else ""
        attached = f" [{files} file]" if files else ""
        return f"  line {params.get('LINE', '?')}:{shown}{attached}{more}"
    if call.method == "batch":
        return f"  ({len(params.get('cmd') or {})} calls in one request)"
    return ""


def _wa_detail(call: Any) -> str:
    body = call.json if isinstance(call.json, dict) else {}
    kind = body.get("type")
    if kind == "text":
        text = (body.get("text") or {}).get("body", "")
        return f'  to {body.get("to")}: "{_short(text)}"  → HTTP {call.status}'
    if kind:
        return f"  to {body.get('to')}: {kind}  → HTTP {call.status}"
    return f"  → HTTP {call.status}"


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Itself:
    """The gateway's own app, mounted once it exists (it is built after its network)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@contextlib.contextmanager
def _bound_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def _serve_on(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def _until(observer: Observer, predicate: Callable[[], bool]) -> None:
    """Wait for `predicate`, re-checked at each pipeline observation."""
    async with asyncio.timeout(STEP_TIMEOUT):
        while not predicate():
            # A fake's own state may change without a pipeline event: look again now and then.
            await observer.wait_next(0.5)


async def run_demo(*, once: bool, out: TextIO = sys.stdout, workdir: Path | None = None) -> int:
    """Play the demo; with `once`, return when it is over, else serve until cancelled.

    Without `workdir` the store and media live in a `whatschat-demo-*` temporary folder,
    removed however the demo ends (at the end, on Ctrl-C, on an error).
    """
    if workdir is not None:
        return await _run(once, out, workdir)
    directory = Path(tempfile.mkdtemp(prefix="whatschat-demo-"))
    try:
        return await _run(once, out, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _run(once: bool, out: TextIO, directory: Path) -> int:
    from gateway_fakes.bitrix24 import FakePortal
    from gateway_fakes.cloudapi import FakeCloudApi

    # A fresh admin token each run: it signs in to the console, and dies with the demo.
    token = secrets.token_urlsafe(16)
    with _bound_socket() as gateway_sock, _bound_socket() as portal_sock:
        public_url = f"http://127.0.0.1:{gateway_sock.getsockname()[1]}"
        async with httpx.AsyncClient(timeout=30.0) as to_gateway:
            # Wall-clock time on both fakes, so their call records interleave in the trace.
            portal = FakePortal(http=to_gateway, installed=False, fetch_files=True, clock=time.time)
            whatsapp = FakeCloudApi(http=to_gateway, callback_url=f"{public_url}/webhooks/wa")
            settings = _settings(directory, public_url, portal, whatsapp, token)
            observer = Observer()
            itself = _Itself()
            apps: dict[str, ASGIApp] = {
                # The gateway fetching its own links (a photo it re-hosts for the portal).
                "127.0.0.1": itself,
                "graph.facebook.com": whatsapp.app,
                "lookaside.fbsbx.com": whatsapp.app,
                "acme.bitrix24.com": portal.app,
                "oauth.bitrix.info": portal.oauth_app,
            }
            gateway, network = build_gateway(settings, apps=apps, plugins=[observer])
            app = itself.app = create_app(gateway)
            await gateway.start()
            try:
                async with _serve_on(app, gateway_sock), _serve_on(portal.app, portal_sock):
                    harness = GatewayHarness(gateway, to_gateway, network, observer, public_url)
                    trace = Trace(out, portal, whatsapp)
                    portal_url = f"http://127.0.0.1:{portal_sock.getsockname()[1]}"
                    await _play(harness, portal, whatsapp, trace, public_url, token)
                    _print_urls(out, public_url, portal_url, directory, token, once=once)
                    if not once:
                        out.write("\nServing until Ctrl-C (the folder above is removed then).\n")
                        out.flush()
                        await asyncio.Event().wait()
            finally:
                await gateway.stop()
    return 0


def _settings(
    directory: Path, public_url: str, portal: Any, whatsapp: Any, token: str
) -> dict[str, Any]:
    return {
        "public_url": public_url,
        "store": {"url": f"sqlite:///{directory / 'demo.db'}"},
        "media": {"directory": str(directory / "media")},
        "admin": {"token": token},
        # The gateway re-hosts files from its own links, which are on loopback in the demo.
        "fetch": {"allowed_hosts": ["127.0.0.1"]},
        "retry": {"base_delay": 0.2, "max_delay": 2.0, "max_attempts": 3},
        "workers": {"poll_interval": 0.5, "concurrency": 2},
        "channels": {
            "wa": {
                "provider": "cloudapi",
                "phone_number_id": whatsapp.phone_number_id,
                "access_token": whatsapp.access_token,
                "app_secret": whatsapp.app_secret,
                "verify_token": "demo-verify-token",
                # What opens a conversation outside the 24-hour window (step 9).
                "template_name": "order_update",
            }
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                "connector_id": "whatschat",
                "connector_name": "WhatsApp (demo)",
            }
        },
    }


async def _play(
    h: GatewayHarness, portal: Any, whatsapp: Any, trace: Trace, public: str, token: str
) -> None:
    from gateway_fakes.bitrix24.browser import form_fields

    observer = h.observer

    trace.step("1. Bitrix24 installs the app")
    response = await portal.install(f"{public}/webhooks/b24/install")
    trace.say(f"Bitrix24 ─▶ gateway  POST /webhooks/b24/install  → HTTP {response.status_code}")
    portal.finish_install()
    trace.flush()
    trace.say("The WhatsApp connector now appears in the portal's Contact Center.")

    trace.step("2. The administrator links the WhatsApp number to open line 1")
    page = await portal.open_connector_settings(line=LINE)
    trace.say(f"Bitrix24 ─▶ gateway  settings page (iframe)  → HTTP {page.status_code}")
    linked = await h.client.post(
        f"{public}/webhooks/b24/placement", data=form_fields(page.text, "link", "wa")
    )
    trace.say(f"admin clicks Link  → HTTP {linked.status_code}")
    trace.flush()

    trace.step("3. A customer writes on WhatsApp")
    whatsapp.customer_writes(CUSTOMER, "Hello! Is my *order 1042* ready?", name="Ivan Petrov")
    await _deliver(whatsapp, trace)
    await _until(observer, lambda: len(portal.messages(line=LINE, chat_id=CUSTOMER)) >= 1)
    trace.flush()
    shown = portal.messages(line=LINE, chat_id=CUSTOMER)[-1]
    trace.say(f'The operator sees: "{shown.text}" from {shown.user.get("name", "?")}')

    trace.step("4. The customer sends a photo")
    whatsapp.customer_writes(CUSTOMER, "This one", kind="image")
    await _deliver(whatsapp, trace)
    await _until(observer, lambda: len(portal.messages(line=LINE, chat_id=CUSTOMER)) >= 2)
    trace.flush()
    photo = portal.messages(line=LINE, chat_id=CUSTOMER)[-1]
    files = [f.get("url", "") for f in photo.files]
    trace.say(f"The portal fetched the photo from the gateway's media link: {files[:1]}")

    trace.step("5. The operator answers in the open line")
    emission = await portal.operator_writes(
        LINE, CUSTOMER, "Yes, [b]it is ready[/b]. Pick it up today."
    )
    await _until(observer, lambda: bool(whatsapp.sent) and not emission.message.sending)
    trace.flush()
    reply = whatsapp.sent[-1]
    trace.say(f'The customer gets: "{reply.text}"; the operator\'s spinner clears (delivered).')

    trace.step("6. WhatsApp reports the answer delivered and read")
    whatsapp.mark_delivered(reply.id)
    whatsapp.mark_read(reply.id)
    await _deliver(whatsapp, trace)
    await _until(observer, lambda: bool(portal.calls_to("imconnector.send.status.reading")))
    trace.flush()
    trace.say("The operator sees the message as read.")

    trace.step("7. The customer replies quoting the answer")
    whatsapp.customer_writes(CUSTOMER, "Great, thanks!", context=reply.id)
    await _deliver(whatsapp, trace)
    await _until(
        observer, lambda: "thanks" in portal.messages(line=LINE, chat_id=CUSTOMER)[-1].text
    )
    trace.flush()
    quoted = portal.messages(line=LINE, chat_id=CUSTOMER)[-1]
    trace.say(f'The operator sees: "{_short(quoted.text, 90)}"')

    trace.step("8. A reply WhatsApp refuses: the operator is told why")
    whatsapp.customer_writes(UNLUCKY, "Hi, anyone there?", name="Olga")
    await _deliver(whatsapp, trace)
    await _until(observer, lambda: len(portal.messages(line=LINE, chat_id=UNLUCKY)) >= 1)
    await portal.operator_writes(LINE, UNLUCKY, "Hello Olga!")
    await _until(observer, lambda: len(portal.messages(line=LINE, chat_id=UNLUCKY)) >= 3)
    trace.flush()
    note = portal.messages(line=LINE, chat_id=UNLUCKY)[-1]
    trace.say(f'The operator sees in the chat: "{_short(note.text, 100)}"')
    dead = await h.client.get(
        f"{public}/admin/dead-letters", headers={"Authorization": f"Bearer {token}"}
    )
    parked = dead.json().get("dead_letters", [])
    trace.say(f"Parked as a dead letter, visible and replayable: {len(parked)} job(s)")

    trace.step("9. A manager writes first from a CRM card")
    trace.say(f'In a contact card: "Send SMS" through "WhatsApp (wa)" to {NEW_CUSTOMER_TYPED}')
    sms, response = await portal.send_sms(
        "whatschat.wa", NEW_CUSTOMER_TYPED, "Hello Maria, your order 1043 has shipped."
    )
    trace.say(f"Bitrix24 ─▶ gateway  POST /webhooks/b24/sms  → HTTP {response.status_code}")
    await _until(observer, lambda: sms.status is not None)
    trace.flush()
    first = whatsapp.sent[-1]
    how = (
        f'the template "{first.request["template"]["name"]}"'
        if first.type == "template"
        else "text"
    )
    trace.say(f"No 24-hour window with a new customer: WhatsApp got it as {how}.")
    trace.say(f"The CRM card shows the message {sms.status}.")
    mirrored = portal.messages(line=LINE, chat_id=NEW_CUSTOMER)
    trace.say(f'The operator sees it in the open line: "{_short(mirrored[-1].text, 90)}"')
    whatsapp.customer_writes(NEW_CUSTOMER, "Thank you, I'll be home.", name="Maria")
    await _deliver(whatsapp, trace)
    await _until(observer, lambda: len(portal.messages(line=LINE, chat_id=NEW_CUSTOMER)) >= 2)
    trace.flush()
    answer = portal.messages(line=LINE, chat_id=NEW_CUSTOMER)[-1]
    trace.say(f'Her answer lands in the same chat: "{_short(answer.text, 90)}"')
    trace.say(f"The CRM card shows the message {sms.status} (statuses: {', '.join(sms.statuses)}).")


async def _deliver(whatsapp: Any, trace: Trace) -> None:
    for delivery in await whatsapp.deliver_webhooks():
        trace.say(f"WhatsApp ─▶ gateway  POST /webhooks/wa (signed)  → HTTP {delivery.status}")


def _print_urls(
    out: TextIO, public_url: str, portal_url: str, directory: Path, token: str, *, once: bool
) -> None:
    out.write("\n── The gateway is running ───────────────────────────────────────────\n")
    if not once:
        out.write(f"   console    {public_url}/console/  (sign in with the token below)\n")
        out.write(f"   token      {token}  (this run's admin token; gone when it stops)\n")
    out.write(f"   health     {public_url}/readyz\n")
    out.write(f"   metrics    {public_url}/metrics\n")
    out.write(f"   admin API  {public_url}/admin/dead-letters  (Bearer <token>)\n")
    out.write(f"   fake Bitrix24 portal  {portal_url}/rest/app.info\n")
    out.write(f"   store and media in {directory}\n")
    out.flush()
