"""The test kit: build a gateway from a settings dict, with its HTTP routed to fake apps.

    async with running_gateway(settings, apps={"crm.test": recorder.app}) as harness:
        await harness.client.post("/webhooks/wa", json=..., headers=...)

Outbound HTTP of every provider goes through one `httpx.AsyncClient` whose `mounts` send each
known host to an in-process ASGI app (`httpx.ASGITransport`), so plugin code keeps its real
base URLs. A request to any other host fails with `UnexpectedHost`, and the harness fails
the test on exit if one was attempted, even when the provider swallowed the error as a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

from gateway import shaping
from gateway.aio import wait_event
from gateway.app import create_app
from gateway.hookspecs import hookimpl
from gateway.logs import configure_logging
from gateway.observe import Observation
from gateway.plugins import PluginHost
from gateway.providers import Outcome, Outgoing, Provider
from gateway.runtime import Gateway
from gateway.settings import settings_from_mapping
from gateway.settings_check import secret_values
from gateway.testing import providers as test_providers
from gateway.testing.recorder import Received, Recorder
from gateway.testing.redaction import redact_in_tests
from gateway.testing.transports import ToGateway

__all__ = [
    "FakeNetwork",
    "GatewayHarness",
    "Observer",
    "Received",
    "Recorder",
    "ToGateway",
    "UnexpectedHost",
    "build_gateway",
    "configure_logging",
    "create_app",
    "public_resolver",
    "redact_in_tests",
    "running_gateway",
    "send_shaped",
]


class Observer:
    """A plugin that keeps every observation, so tests wait for events instead of sleeping."""

    def __init__(self) -> None:
        self.seen: list[Observation] = []
        self._waiters: list[asyncio.Event] = []

    @hookimpl
    def observe(self, observation: Observation) -> None:
        self.seen.append(observation)
        for waiter in self._waiters:
            waiter.set()

    def of_type(self, kind: str) -> list[Observation]:
        return [o for o in self.seen if o.type == kind]

    async def wait_next(self, timeout: float) -> bool:
        """Wait for the next observation of any kind; False if none came within `timeout`."""
        waiter = asyncio.Event()
        self._waiters.append(waiter)
        try:
            return await wait_event(waiter, timeout)
        finally:
            self._waiters.remove(waiter)

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Observation]:
        """Wait until `count` observations of `kind` were made; returns them."""
        async with asyncio.timeout(timeout):
            while len(self.of_type(kind)) < count:
                waiter = asyncio.Event()
                self._waiters.append(waiter)
                try:
                    await waiter.wait()
                finally:
                    self._waiters.remove(waiter)
        return self.of_type(kind)


class UnexpectedHost(httpx.ConnectError):
    """A provider tried to reach a host the test did not give a fake for."""


@dataclass(slots=True)
class FakeNetwork:
    """Host name -> ASGI app. Hosts match exactly, any scheme and port."""

    apps: Mapping[str, ASGIApp]
    unexpected: list[str] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        mounts: dict[str, httpx.AsyncBaseTransport] = {
            f"all://{host}": httpx.ASGITransport(app=app) for host, app in self.apps.items()
        }
        return httpx.AsyncClient(mounts=mounts, transport=_Refuse(self), **kwargs)


class _Refuse(httpx.AsyncBaseTransport):
    def __init__(self, network: FakeNetwork) -> None:
        self.network = network

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.network.unexpected.append(host)
        raise UnexpectedHost(f"unexpected host {host!r}: no fake app mounted for it")


async def public_resolver(host: str) -> list[str]:
    """Pretend every fake host resolves to a public address (fakes have no DNS)."""
    return ["93.184.216.34"]


async def send_shaped(
    provider: Provider,
    batch: Sequence[Outgoing],
    sources: Mapping[str, Provider] | None = None,
) -> Sequence[Outcome]:
    """Hand `batch` to `provider` the way delivery does: shaped to its capabilities first
    (texts split, files linked, `rehost` media re-hosted through `sources[item.source]`)."""
    return await shaping.send(provider, batch, sources or {})


def build_gateway(
    settings: Mapping[str, Any],
    *,
    apps: Mapping[str, ASGIApp] | None = None,
    plugins: Sequence[object] = (),
    clock: Callable[[], float] = time.time,
    entry_points: bool = True,
) -> tuple[Gateway, FakeNetwork]:
    """A gateway (not started) from a settings dict, its HTTP routed to `apps` by host."""
    host = PluginHost()
    if entry_points:
        host.load_entry_points(strict=True)
    if not host.pm.is_registered(test_providers):
        host.add(test_providers, name="testing")
    for index, plugin in enumerate(plugins):
        host.add(plugin, name=getattr(plugin, "__name__", f"test-plugin-{index}"))
    host.collect_providers()
    network = FakeNetwork(dict(apps or {}))
    parsed = settings_from_mapping(settings)
    # Captured logs are redacted as production logs are: a test sees a leak as `***`-free.
    redact_in_tests(secret_values(parsed, host.providers))
    gateway = Gateway(
        parsed,
        host,
        http=network.client(timeout=10.0),
        clock=clock,
        resolver=public_resolver,
    )
    return gateway, network


@dataclass(slots=True)
class GatewayHarness:
    """A started gateway, an HTTP client to its app, and the fake network behind it."""

    gateway: Gateway
    client: httpx.AsyncClient
    network: FakeNetwork
    observer: Observer
    #: The gateway's real loopback URL when started with `serve_http=True`, else None.
    url: str | None = None


@asynccontextmanager
async def running_gateway(
    settings: Mapping[str, Any],
    *,
    apps: Mapping[str, ASGIApp] | None = None,
    plugins: Sequence[object] = (),
    clock: Callable[[], float] = time.time,
    serve_http: bool = False,
) -> AsyncIterator[GatewayHarness]:
    """Start a gateway on `settings`; fail if it tried to reach an unexpected host.

    With `serve_http`, the app is also served by real uvicorn on a loopback port
    (`harness.url`), and `harness.client` talks to it over real HTTP.
    """
    from gateway.testing.process import serve

    observer = Observer()
    gateway, network = build_gateway(settings, apps=apps, plugins=[observer, *plugins], clock=clock)
    app = create_app(gateway)
    await gateway.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if serve_http:
                url: str | None = await stack.enter_async_context(serve(app))
                client = httpx.AsyncClient(base_url=str(url))
            else:
                url = None
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url=gateway.settings.public_url
                )
            await stack.enter_async_context(client)
            yield GatewayHarness(gateway, client, network, observer, url)
    finally:
        await gateway.stop()
    if network.unexpected:
        raise AssertionError(f"the gateway reached unexpected hosts: {network.unexpected}")
