"""Two real `gateway run` processes on one PostgreSQL: one shared state, no silent drop.

Process A serves the Bitrix24 settings page and installs; process B answers webhooks (and
the other way round). Every change made in one process must take effect in the other:
a link, an unlink, a reinstall with a new `application_token`, an uninstall. A process logs
`[scope@version]` when it re-read a scope, which is what the test waits on (no sleeps).
The two-process test needs PostgreSQL (GATEWAY_TEST_POSTGRES_URL; skipped without it,
failed without it in CI). Two processes cannot share a SQLite store (each holds its lock),
so on SQLite one real process shows what applies there: nothing is dropped before a link or
after an unlink or an uninstall.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.store import open_store
from gateway.store.base import Store
from gateway.testing import Recorder
from gateway.testing.postgres import postgres_schema
from gateway.testing.process import GatewayProcess, free_port, serve

pytestmark = pytest.mark.anyio

PUBLIC = "http://gateway.test"
CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
LINE = 1


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


class ToProcess(httpx.AsyncBaseTransport):
    """The portal's way to the gateway: `gateway.test` goes to whichever process is `target`."""

    def __init__(self) -> None:
        self.target = ""
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "gateway.test":
            base = httpx.URL(self.target)
            request.url = request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Watched:
    """An ASGI app that lets tests wait until what it served satisfies a condition."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served = asyncio.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        async with self.served:
            self.served.notify_all()

    async def until(self, condition: Callable[[], bool], within: float = 30.0) -> None:
        async with asyncio.timeout(within), self.served:
            await self.served.wait_for(condition)


@dataclass
class Cluster:
    portal: FakePortal
    watched: Watched
    channel: Recorder
    router: ToProcess
    store: Store
    a: GatewayProcess
    b: GatewayProcess
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def via(self, process: GatewayProcess) -> None:
        """Bitrix24's next calls (events, pages) reach `process`."""
        self.router.target = process.url

    async def version(self, scope: str) -> int:
        return (await self.store.versions()).get(scope, 0)

    async def seen(self, process: GatewayProcess, scope: str, version: int) -> None:
        """Wait until `process` has re-read `scope` at `version` or later.

        Lines read while waiting for something else count too: one check may log several
        scopes in one line (`[instance:b24@7] [routes@9]`), or log the one asked for next
        before the one asked for now, and a wait on new lines alone would miss it.
        """
        pattern = re.compile(rf"\[{re.escape(scope)}@(\d+)\]")

        def reached(line: str) -> bool:
            return any(int(found) >= version for found in pattern.findall(line))

        if any(reached(line) for line in process.lines):
            return
        while not reached(await process.wait_for_line(f"[{scope}@")):
            pass

    async def customer(self, process: GatewayProcess, msg_id: str, chat: str = "7999") -> None:
        body = {"messages": [{"id": msg_id, "chat": chat, "from": chat, "text": msg_id}]}
        client = self.clients[process.url]
        response = await client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        assert response.status_code == 200, response.text

    async def settings_page(self, process: GatewayProcess) -> str:
        self.via(process)
        response = await self.portal.open_connector_settings(line=LINE)
        assert response.status_code == 200, response.text
        return response.text

    async def press(self, process: GatewayProcess, action: str, channel: str = "") -> str:
        page = await self.settings_page(process)
        response = await self.clients[process.url].post(
            "/webhooks/b24/placement", data=form(page, action, channel)
        )
        assert response.status_code == 200, response.text
        return response.text

    def delivered(self) -> list[str]:
        return [m.text for m in self.portal.messages(line=LINE)]


def form(page: str, action: str, channel: str = "") -> dict[str, str]:
    for block in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', block))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        if fields.get("action") == action and fields.get("channel") == channel:
            return fields
    raise AssertionError(f"no {action} form for {channel!r} in:\n{page}")


def write_settings(tmp_path: Path, store_url: str, channel_url: str, portal: FakePortal) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f"""
public_url = "{PUBLIC}"
allow_local_public_url = true  # the fake portal reaches gateway.test over plain http

[store]
url = "{store_url}"

[retry]
base_delay = 0.05
max_delay = 0.5

[workers]
concurrency = 2
lease_seconds = 5
poll_interval = 1
# Single-process gateways: the subject is what one gateway's change does in another; a
# delivery process beside each would make six processes on a 2-core CI for nothing more.
delivery_process = false

[fetch]
allow_private = true

[channels.wa]
provider = "test-channel"
base_url = "{channel_url}"
token = "wa-token"

[crms.b24]
provider = "bitrix24"
client_id = "{portal.client_id}"
client_secret = "{portal.client_secret}"
oauth_url = "{portal.base_url}/oauth/token/"
rate = 1000
burst = 1000
"""
    )
    return path


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, store_url: str, count: int = 2) -> AsyncIterator[Cluster]:
    router = ToProcess()
    portal = FakePortal(
        installed=False,
        scheme="http",
        rate=None,
        http=httpx.AsyncClient(transport=router, timeout=30.0),
    )
    watched = Watched(portal.app)
    channel = Recorder(name="wa")
    async with serve(watched) as portal_url, serve(channel.app) as channel_url:
        portal.domain = portal_url.removeprefix("http://")
        portal.server_endpoint = f"{portal_url}/rest/"
        settings = write_settings(tmp_path, store_url, channel_url, portal)
        processes = [
            GatewayProcess(
                settings,
                free_port(),
                env={"GATEWAY_MEDIA__DIRECTORY": str(tmp_path / f"media-{name}")},
            )
            for name in "ab"[:count]
        ]
        a, b = processes[0], processes[-1]
        store = open_store(store_url, tool=True)
        await store.open()
        try:
            await asyncio.gather(*(p.start() for p in processes))
            async with contextlib.AsyncExitStack() as stack:
                clients = {
                    p.url: await stack.enter_async_context(httpx.AsyncClient(base_url=p.url))
                    for p in (a, b)
                }
                yield Cluster(portal, watched, channel, router, store, a, b, clients)
        finally:
            for process in processes:
                process.stop()
            await store.close()
            await portal.client().aclose()


async def install(c: Cluster, process: GatewayProcess) -> None:
    c.via(process)
    response = await c.portal.install(f"{process.url}/webhooks/b24/install")
    assert "BX24.installFinish()" in response.text, response.text
    c.portal.finish_install()


@pytest.mark.postgres
async def test_link_unlink_reinstall_and_uninstall_reach_the_other_process(
    tmp_path: Path, pg_url: str
) -> None:
    async with cluster(tmp_path, pg_url) as c:
        # Installed through A: B knows the portal (its events verify) once it re-read.
        await install(c, c.a)
        await c.seen(c.b, "instance:b24", await c.version("instance:b24"))

        # Link on A while B answers webhooks: nothing is lost, nothing reordered.
        sent = [f"m{n:03d}" for n in range(400)]
        posting = asyncio.create_task(_post_all(c, sent))
        linked = await c.press(c.a, "link", "wa")
        assert "Linked wa" in linked, linked
        await posting
        await c.watched.until(lambda: len(c.delivered()) >= len(sent), within=60)
        assert c.delivered() == sent

        # Unlink on B: A stops (its next message for the line is held, not sent).
        await c.press(c.b, "unlink", "wa")
        await c.seen(c.a, "routes", await c.version("routes"))
        await c.customer(c.a, "after-unlink")
        held = await c.store.held(instance="wa")
        assert [m.dedupe_key.rsplit(":", 1)[-1] for m in held] == ["after-unlink"]
        # Linked again on B: A's held message is delivered, after all the others.
        await c.press(c.b, "link", "wa")
        await c.watched.until(lambda: c.delivered()[-1:] == ["after-unlink"])

        # Reinstall on A with a new application token: B takes only the new one.
        old_token = c.portal.application_token
        c.portal.application_token = "5f0e7c2a9b8d4e6f1a3c5b7d9e0f2a4c"
        await install(c, c.a)
        await c.seen(c.b, "instance:b24", await c.version("instance:b24"))
        c.via(c.b)
        c.portal.application_token = old_token
        forged = await c.portal.operator_writes(LINE, "7999", "with the old token")
        assert [r.status_code for r in forged.responses] == [401], forged.responses
        c.portal.application_token = "5f0e7c2a9b8d4e6f1a3c5b7d9e0f2a4c"
        reply = await c.portal.operator_writes(LINE, "7999", "with the new token")
        assert [r.status_code for r in reply.responses] == [200]
        await c.channel.wait_for(lambda r: any("with the new token" in t for t in r.texts()))
        assert not any("with the old token" in t for t in c.channel.texts())

        # Uninstall on B: A stops too (the portal and its routes are gone everywhere).
        c.via(c.b)
        await c.portal.uninstall()
        await c.seen(c.a, "routes", await c.version("routes"))
        await c.seen(c.a, "instance:b24", await c.version("instance:b24"))
        # An event as the portal sent it before, now to A: refused, no portal is installed.
        events_url = f"{c.a.url}/webhooks/b24/events"
        again = await c.clients[c.a.url].post(events_url, data=dict(reply.deliveries[0].form))
        assert again.status_code == 401, again.text
        count = len(c.delivered())
        await c.customer(c.a, "after-uninstall")
        assert "after-uninstall" in [
            m.dedupe_key.rsplit(":", 1)[-1] for m in await c.store.held(instance="wa")
        ]
        assert len(c.delivered()) == count


async def _post_all(c: Cluster, ids: list[str]) -> None:
    """Half to A, half to B, a few at a time, in order per process."""
    for start in range(0, len(ids), 8):
        batch = ids[start : start + 8]
        for msg_id in batch:
            process = c.a if int(msg_id[1:]) % 2 else c.b
            await c.customer(process, msg_id)


async def test_one_sqlite_process_holds_what_no_route_carries(tmp_path: Path) -> None:
    async with cluster(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", count=1) as c:
        await install(c, c.a)
        for n in range(3):
            await c.customer(c.a, f"early-{n}")
        assert len(await c.store.held(instance="wa")) == 3
        await c.press(c.a, "link", "wa")
        await c.customer(c.a, "linked")
        expected = ["early-0", "early-1", "early-2", "linked"]
        await c.watched.until(lambda: c.delivered() == expected)
        await c.press(c.a, "unlink", "wa")
        await c.customer(c.a, "after-unlink")
        c.via(c.a)
        await c.portal.uninstall()
        await c.customer(c.a, "after-uninstall")
        held = [m.dedupe_key.rsplit(":", 1)[-1] for m in await c.store.held(instance="wa")]
        assert held == ["after-unlink", "after-uninstall"]
        assert c.delivered() == expected
