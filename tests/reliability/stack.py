"""All-real-plugins stack for reliability scenarios: Bitrix24 fake portal, Cloud API fake.

Both fakes are served by uvicorn on loopback in the test process; the gateway talks to them
over real HTTP by their loopback URLs (`api_base`, the portal's `client_endpoint`), so the
same settings work for an in-process gateway and for `gateway run` in a child process.
The fake Meta posts a `sent` status for each message it takes and re-posts what the gateway
refused, on its own (`Stack.meta_posts`), as Meta does.

The Bitrix24 install needs the OAuth server (an https URL the plugin insists on), so it is
done once by an in-process gateway on the same store, with the OAuth host routed to the
fake by the test kit; the child process then starts on that store with the app installed
and the open line linked, and never needs OAuth again within the token's hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.cloudapi import FakeCloudApi
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.aio import wait_event
from gateway.app import create_app
from gateway.testing import GatewayHarness, Observer, build_gateway
from gateway.testing.process import free_port, serve
from gateway.testing.tally import Tally

ADMIN = "reliability-admin-token"
LINE = 1
KEY = re.compile(r"c\d+/(?:in|out)/\d+")
#: The Cloud API channel's `confirm_window` when the fake Meta posts statuses: well past
#: the fake's re-post of a status a kill refused (doubling from 0.25 s, at most 1 s apart,
#: posted every `POST_EVERY`), so a reply that landed is named by its status in time.
CONFIRM_WINDOW = 10.0
POST_EVERY = 0.1
#: A sender gives up after being refused this long: the gateway is down for good (its log
#: says why), and the run must fail rather than re-post for ever.
REFUSED_AT_MOST = 120.0
NOTICE = "[b]⚠ Not delivered to WhatsApp[/b]"


def conversation_of(key: str) -> str:
    return key.rsplit("/", 1)[0]


class Pulse:
    """ASGI wrapper that wakes waiters at every request a fake receives (no polling sleeps)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.event = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.event.set()

    async def until(self, predicate: Callable[[], bool], within: float) -> None:
        """Wait until `predicate` holds, re-checked after each request (and each second)."""
        async with asyncio.timeout(within):
            while not predicate():
                self.event.clear()
                await wait_event(self.event, 1.0)


@dataclass
class Stack:
    tmp: Path
    port: int
    portal: FakePortal
    whatsapp: FakeCloudApi
    pulse: Pulse
    settings: dict[str, Any] = field(default_factory=dict)
    mounts: dict[str, ASGIApp] = field(default_factory=dict)
    #: Cleared while the gateway is down, so drivers wait instead of spinning.
    up: asyncio.Event = field(default_factory=asyncio.Event)
    #: Held by whoever makes the fake Meta post, so no post sees another's retries half done.
    posting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def customers(self, count: int) -> list[str]:
        return [f"7999{index:07d}" for index in range(count)]

    # -- what arrived ----------------------------------------------------------------------

    def at_portal(self) -> list[tuple[str, str]]:
        """(customer, text) of every client message the portal holds, in arrival order."""
        return [
            (m.chat_id, m.text)
            for m in self.portal.state.messages
            if m.author == "client" and m.line == LINE
        ]

    def at_whatsapp(self) -> list[tuple[str, str]]:
        return [(m.wa_id, m.text or "") for m in self.whatsapp.sent]

    def arrived(self) -> set[str]:
        return {t for _, t in self.at_portal()} | {t for _, t in self.at_whatsapp()}

    def count_arrivals(self, tally: Tally) -> None:
        """Feed every arrival at both fakes to `tally`; the gateway's notices apart."""
        notices = 0
        for _, text in self.at_portal() + self.at_whatsapp():
            if text.startswith(NOTICE):
                notices += 1  # the gateway telling the operator a reply's fate is unknown
                continue
            tally.deliver(conversation_of(text) if KEY.fullmatch(text) else "?", text)
        tally.extra["operator_notices"] = notices

    async def customers_write(self, tally: Tally, round_: int, chats: list[str]) -> int:
        """One message from each customer in one webhook POST, re-posted until answered 2xx
        (as Meta does); returns how many re-posts it took."""
        async with self.posting:
            for i, chat in enumerate(chats):
                key = f"c{i}/in/{round_}"
                tally.send(conversation_of(key), key)
                self.whatsapp.customer_writes(chat, key)
            made = await self.whatsapp.deliver_webhooks()
            reposts = 0
            refused_until = asyncio.get_running_loop().time() + REFUSED_AT_MOST
            while True:
                for delivery in made:
                    if delivery.ok:
                        for key in KEY.findall(repr(json.loads(delivery.body))):
                            tally.accept(key)
                        self.pulse.event.set()  # progress for anyone waiting on acceptances
                if not self.whatsapp.retries:
                    return reposts
                reposts += len(self.whatsapp.retries)
                gave_up(refused_until, "the customers' webhook")
                await self.up.wait()
                await asyncio.sleep(0.05)  # the provider's retry backoff
                made = await self.whatsapp.retry_webhooks(force=True)

    async def meta_posts(self) -> None:
        """The fake Meta's own sender, as Meta runs it: what it queued (the `sent` status of
        each message it took) is posted a moment later, and a refused post is re-posted on
        the fake's backoff until it gets a 2xx, whether or not a driver is posting."""
        while True:
            async with self.posting:
                if self.whatsapp.pending:
                    await self.whatsapp.deliver_webhooks()
                await self.whatsapp.retry_webhooks()
            await asyncio.sleep(POST_EVERY)  # Meta's posting cadence, not a wait for anything

    async def operator_writes(self, tally: Tally, i: int, chat: str, round_: int) -> int:
        """An operator's reply, its event re-sent until answered 2xx; returns the re-sends."""
        key = f"c{i}/out/{round_}"
        tally.send(conversation_of(key), key)
        emission = await self.portal.operator_writes(LINE, chat, key, signature=False)
        deliveries = emission.deliveries
        resends = 0
        refused_until = asyncio.get_running_loop().time() + REFUSED_AT_MOST
        while not any(d.status == 200 for d in deliveries):
            resends += 1
            gave_up(refused_until, f"the portal's event for {key}")
            await self.up.wait()
            await asyncio.sleep(0.05)
            deliveries = await self.portal.emit(emission.event, emission.data)
        tally.accept(key)
        self.pulse.event.set()
        return resends

    def chats_open(self, chats: list[str]) -> bool:
        return all(("whatschat", LINE, c) in self.portal.state.chats for c in chats)

    def ready_jobs(self) -> int:
        uri = f"file:{self.tmp / 'gw.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'ready'").fetchone()
        return int(row[0])

    def parked_keys(self) -> dict[str, tuple[int, str]]:
        """Message key -> (job id, reason) of every dead-lettered send (read-only peek)."""
        uri = f"file:{self.tmp / 'gw.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute(
                "SELECT id, payload, last_error FROM jobs WHERE state = 'dead' AND kind = 'send'"
            ).fetchall()
        found: dict[str, tuple[int, str]] = {}
        for job_id, payload, reason in rows:
            text = payload.decode() if isinstance(payload, bytes) else str(payload)
            for key in KEY.findall(text):
                found[key] = (int(job_id), str(reason))
        return found


def gave_up(refused_until: float, what: str) -> None:
    if asyncio.get_running_loop().time() > refused_until:
        raise AssertionError(f"the gateway refused {what} for {REFUSED_AT_MOST:g} s")


def stack_settings(stack: Stack, wa_base: str, **overrides: Any) -> dict[str, Any]:
    portal, whatsapp = stack.portal, stack.whatsapp
    settings: dict[str, Any] = {
        "public_url": stack.public_url,
        # The fakes call the gateway on loopback over plain http: `gateway run` must allow it.
        "allow_local_public_url": True,
        "store": {"url": f"sqlite:///{stack.tmp / 'gw.db'}"},
        "media": {"directory": str(stack.tmp / "media")},
        "admin": {"token": ADMIN},
        "retry": {"base_delay": 0.05, "max_delay": 0.5, "max_attempts": 50, "jitter": 0.2},
        "workers": {"poll_interval": 0.5, "concurrency": 4},
        "channels": {
            "wa": {
                "provider": "cloudapi",
                "phone_number_id": whatsapp.phone_number_id,
                "access_token": whatsapp.access_token,
                "app_secret": whatsapp.app_secret,
                "verify_token": "reliability-verify",
                "api_base": wa_base,
                "messages_per_second": 1000,
                "pair_interval": 0.0,
                # A reply whose answer a kill lost is named by its status (landed.py). A
                # stack whose fake posts no statuses turns that off: such a reply is parked.
                "confirm_window": CONFIRM_WINDOW if whatsapp.auto_sent_status else 0,
            }
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                "connector_id": "whatschat",
                "connector_name": "WhatsApp (reliability)",
                "rate": 200.0,
                "burst": 1000,
                "need_signature": False,
                # The fake portal finishes every request it received at once, even when the
                # gateway died waiting for the answer: a chat can be read back right away.
                "reconcile_after": 1.0,
            }
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            settings.setdefault(section, {}).update(values)
        else:
            settings[section] = values
    return settings


def to_toml(settings: dict[str, Any]) -> str:
    """Enough TOML for a settings dict of tables, strings, numbers, booleans and lists."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, v in settings.items():
        if isinstance(v, dict):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")

    def table(prefix: str, body: dict[str, Any]) -> None:
        lines.append(f"\n[{prefix}]")
        nested = []
        for key, v in body.items():
            if isinstance(v, dict):
                nested.append((f"{prefix}.{key}", v))
            else:
                lines.append(f"{key} = {value(v)}")
        for name, sub in nested:
            table(name, sub)

    for name, body in tables:
        table(name, body)
    return "\n".join(lines) + "\n"


def _form_fields(page: str, action: str, channel: str) -> dict[str, str]:
    for form in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = {
            html.unescape(name): html.unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]*)" value="([^"]*)"', form
            )
        }
        if fields.get("action") == action and fields.get("channel") == channel:
            return fields
    raise AssertionError(f"no {action!r} form for {channel!r} in the settings page")


@contextlib.asynccontextmanager
async def served_stack(
    tmp: Path, *, statuses: bool = True, **overrides: Any
) -> AsyncIterator[Stack]:
    """The two fakes on loopback, the app installed and line 1 linked to channel `wa`.

    The gateway is not running on exit from setup: start it (in process or as a child)
    on `stack.settings`, at `stack.port`. With `statuses`, the fake Meta posts a `sent`
    status for each message it takes and re-posts refused webhooks on its own
    (`Stack.meta_posts`); without, only the test posts, and the channel parks a reply
    whose answer was lost (`confirm_window = 0`).
    """
    async with httpx.AsyncClient(timeout=30.0) as to_gateway:
        portal = FakePortal(http=to_gateway, installed=False, rate=None)
        whatsapp = FakeCloudApi(http=to_gateway)
        whatsapp.pair_interval = None
        whatsapp.mps = 100_000
        whatsapp.auto_sent_status = statuses
        # Meta re-posts a refused webhook for up to 7 days, less and less often; here the
        # same doubling, scaled down to the stack's CONFIRM_WINDOW.
        whatsapp.webhook_retry_base = 0.25
        whatsapp.webhook_retry_cap = 1.0
        pulse = Pulse(portal.app)
        wa_pulse = Pulse(whatsapp.app)
        wa_pulse.event = pulse.event  # one wake-up for both fakes
        async with serve(pulse) as portal_url, serve(wa_pulse) as wa_url:
            portal.domain = httpx.URL(portal_url).netloc.decode()
            portal.scheme = "http"
            stack = Stack(tmp, free_port(), portal, whatsapp, pulse)
            stack.up.set()
            whatsapp.callback_url = f"{stack.public_url}/webhooks/wa"
            stack.settings = stack_settings(stack, wa_url, **overrides)
            stack.mounts = {
                portal.domain: pulse,
                "oauth.bitrix.info": portal.oauth_app,
                httpx.URL(wa_url).netloc.decode(): wa_pulse,
            }
            await _install(stack)
            poster = asyncio.create_task(stack.meta_posts()) if statuses else None
            try:
                yield stack
            finally:
                if poster is not None:
                    poster.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poster  # re-raises what made the poster fail, if anything


@contextlib.asynccontextmanager
async def in_process(stack: Stack, *plugins: object) -> AsyncIterator[GatewayHarness]:
    """The gateway in this process on `stack.port`, reaching the fakes in process too
    (so OAuth refreshes and client-side timeouts work); the fakes still post over HTTP."""
    observer = Observer()
    gateway, network = build_gateway(
        stack.settings, apps=stack.mounts, plugins=[observer, *plugins]
    )
    app = create_app(gateway)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", stack.port))
    sock.listen(128)
    await gateway.start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=stack.public_url) as client:
            yield GatewayHarness(gateway, client, network, observer, stack.public_url)
    finally:
        server.should_exit = True
        await task
        sock.close()
        await gateway.stop()


async def _install(stack: Stack) -> None:
    portal = stack.portal
    gateway, _ = build_gateway(stack.settings, apps=stack.mounts)
    app = create_app(gateway)
    await gateway.start()
    saved = portal.http
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=stack.public_url
        ) as client:
            portal.http = client
            response = await portal.install(f"{stack.public_url}/webhooks/b24/install")
            assert response.status_code == 200, response.text
            portal.finish_install()
            page = await portal.open_connector_settings(line=LINE)
            linked = await client.post(
                "/webhooks/b24/placement", data=_form_fields(page.text, "link", "wa")
            )
            # The number by its phone and verified name, as the Cloud API tells them.
            assert "Linked +15550783881 · WhatsChat Test to this open line." in linked.text, (
                linked.text
            )
    finally:
        portal.http = saved
        await gateway.stop()


def _why(reason: str) -> str:
    found = re.search(r"and (\S+) (cannot recognise a resend|could not tell)", reason)
    return f"{found[1]}: {found[2]}" if found else reason[:120]


async def replay_parked(stack: Stack, tally: Tally) -> None:
    """Count dead-lettered sends as parked; replay, through the admin API, those that did
    not land (what an administrator would do), and wait for them to arrive."""
    parked = stack.parked_keys()
    landed = stack.arrived()
    for key in parked:
        tally.park(key)
    to_replay = sorted({job for key, (job, _) in parked.items() if key not in landed})
    tally.extra["parked_already_landed"] = sum(1 for key in parked if key in landed)
    # Why each was parked: the reason names the destination that could not be asked.
    tally.extra["parked_reasons"] = dict(Counter(_why(reason) for _, reason in parked.values()))
    if not to_replay:
        return
    async with httpx.AsyncClient(base_url=stack.public_url) as admin:
        response = await admin.post(
            "/admin/replay",
            json={"job_ids": to_replay},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert response.status_code == 200, response.text
    for key, (job, _) in parked.items():
        if job in to_replay:
            tally.replay(key)
    await stack.pulse.until(lambda: tally.replayed <= stack.arrived(), 60)
