"""The HTTP surface: webhooks, health, readiness, metrics, admin API, console, media links."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.admin import admin_routes
from gateway.console import console_routes
from gateway.hookcall import call_each, succeeded
from gateway.http_errors import exception_handlers
from gateway.metrics import CONTENT_TYPE, record_queue_stats, record_unrouted
from gateway.runtime import Gateway
from gateway.webhook_path import WEBHOOK_METHODS, WebhookEndpoint, WebhookPath

#: Seconds a client may take to send a request body (providers send theirs at once).
BODY_TIMEOUT = 30.0


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI app of one gateway; its lifespan starts and stops the gateway."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        settle_gc()
        try:
            yield
        finally:
            await gateway.stop()

    endpoint = WebhookEndpoint(gateway, BODY_TIMEOUT)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        problems = gateway.own_problems()
        try:
            await gateway.store.ping()
        except Exception as exc:
            problems.append(f"store: {exc}")
        if not gateway.ready:
            problems.append("gateway is starting or stopping")
        if gateway.delivery_peer is not None:
            # The delivery process starts the same instances: the same failure is one line.
            theirs = await gateway.delivery_peer.problems()
            problems += [f"delivery process: {p}" for p in theirs if p not in problems]
        status = 200 if not problems else 503
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    async def metrics(_request: Request) -> Response:
        gateway.notifier.flush()
        now = gateway.clock()
        record_queue_stats(gateway.metrics, await gateway.store.stats(now), now)
        record_unrouted(gateway.metrics, await gateway.store.held_stats())
        registry = gateway.metrics
        if gateway.delivery_peer is not None:  # its counters join this process's own
            registry = await gateway.delivery_peer.metrics()
        return PlainTextResponse(registry.render(), media_type=CONTENT_TYPE)

    routes: list[BaseRoute] = [
        # Served by `WebhookPath` before Starlette; here for a `root_path` and for the 405.
        Route("/webhooks/{instance}", endpoint, methods=WEBHOOK_METHODS),
        Route("/webhooks/{instance}/{subpath:path}", endpoint, methods=WEBHOOK_METHODS),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        gateway.media.route(),
        admin_routes(gateway),
        console_routes(gateway),
    ]
    extras = call_each(gateway.host.hook.http_routes, context=gateway.plugin_context)
    for extra in succeeded(extras):
        routes.extend(cast("list[BaseRoute] | None", extra) or [])
    return GatewayApp(
        endpoint, routes=routes, lifespan=lifespan, exception_handlers=exception_handlers()
    )


class GatewayApp(Starlette):
    """The Starlette app with `WebhookPath` in front: webhooks skip Starlette's machinery."""

    def __init__(self, endpoint: WebhookEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = WebhookPath(endpoint, self._starlette, self.exception_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._front(scope, receive, send)

    async def _starlette(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


SETTINGS_FILE_ENV = "GATEWAY_SETTINGS_FILE"


def create_app_from_env() -> Starlette:
    """The app of one uvicorn worker (`gateway run --workers N`, or `uvicorn --factory
    gateway.app:create_app_from_env --workers N`): settings from $GATEWAY_SETTINGS_FILE.

    Each worker is a process with a gateway of its own; they share the PostgreSQL store.
    """
    import os

    from gateway.cli import load_plugins
    from gateway.logs import configure_logging
    from gateway.settings import load_settings, secret_values

    settings = load_settings(os.environ.get(SETTINGS_FILE_ENV))
    host = load_plugins()
    secrets = secret_values(settings, host.providers)
    configure_logging(settings.log_level, settings.log_format, secrets)
    return create_app(Gateway(settings, host))


#: Container allocations (net of frees) between two young-generation collections; the
#: interpreter's default, 700, is reached every few webhooks.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once started: what is alive now (modules, settings, the gateway) lives as long as
    the process, so it is collected once and then frozen out of later collections, and the
    young generation is collected less often.

    Measured under `wrk -c32` on the Chat API webhook: with the defaults the collector
    took some 5% of the process's time, and each full collection (64,000 objects) held
    the loop for tens of milliseconds, a webhook's whole p99 budget; frozen, a full
    collection scans only the few thousand objects made since.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
