"""The HTTP surface: webhooks, health, readiness, metrics, admin API, console, media links."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin import admin_routes
from gateway.console import console_routes
from gateway.errors import BadRequest, WebhookError
from gateway.hookcall import call_each, succeeded
from gateway.http_errors import error_response, exception_handlers, refusal_response
from gateway.metrics import CONTENT_TYPE, record_queue_stats, record_unrouted
from gateway.observe import Observation
from gateway.providers import WebhookRequest
from gateway.runtime import Gateway

log = logging.getLogger("gateway.http")

#: Seconds a client may take to send a request body (providers send theirs at once).
BODY_TIMEOUT = 30.0
WEBHOOK_METHODS = ["GET", "POST", "PUT", "HEAD"]


def create_app(gateway: Gateway) -> Starlette:
    """The ASGI app of one gateway; its lifespan starts and stops the gateway."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def webhook(request: Request) -> Response:
        instance = request.path_params["instance"]
        provider = gateway.instances.get(instance)
        if provider is None:
            return error_response(404, f"no instance named {instance!r}")
        try:
            body = await _read_body(request, gateway.settings.max_body_bytes)
            inbound = WebhookRequest(
                method=request.method,
                subpath=request.path_params.get("subpath", ""),
                headers={k.lower(): v for k, v in request.headers.items()},
                query=dict(request.query_params),
                body=body,
            )
            result = await provider.handle_webhook(inbound)
        except WebhookError as exc:
            gateway.notify(
                Observation(
                    "rejected",
                    instance,
                    detail={"reason": type(exc).__name__.lower(), "status": exc.status},
                )
            )
            return refusal_response(exc, instance=instance)
        accepted = await gateway.ingest(instance, result.events) if result.events else []
        if result.response is not None:
            return result.response
        new = sum(accepted)
        # orjson: the stdlib encoder behind JSONResponse costs more than this tiny body.
        body = orjson.dumps({"ok": True, "accepted": new, "duplicates": len(accepted) - new})
        return Response(body, media_type="application/json")

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        problems = list(gateway.problems)
        try:
            await gateway.store.ping()
        except Exception as exc:
            problems.append(f"store: {exc}")
        if not gateway.ready:
            problems.append("gateway is starting or stopping")
        if gateway.media.fault:
            problems.append(f"media: {gateway.media.fault}")
        status = 200 if not problems else 503
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)

    async def metrics(_request: Request) -> Response:
        now = gateway.clock()
        record_queue_stats(gateway.metrics, await gateway.store.stats(now), now)
        record_unrouted(gateway.metrics, await gateway.store.held_stats())
        return PlainTextResponse(gateway.metrics.render(), media_type=CONTENT_TYPE)

    routes: list[BaseRoute] = [
        Route("/webhooks/{instance}", webhook, methods=WEBHOOK_METHODS),
        Route("/webhooks/{instance}/{subpath:path}", webhook, methods=WEBHOOK_METHODS),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        gateway.media.route(),
        admin_routes(gateway),
        console_routes(gateway),
    ]
    for extra in succeeded(call_each(gateway.host.hook.http_routes, gateway=gateway)):
        routes.extend(cast("list[BaseRoute] | None", extra) or [])
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())


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


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise WebhookError(f"body larger than {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    try:
        # A client that trickles its body must not hold a connection and a buffer forever.
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise WebhookError(f"body larger than {limit} bytes", status=413)
                chunks.append(chunk)
    except TimeoutError:
        raise WebhookError(
            f"the request body did not arrive within {BODY_TIMEOUT:g} seconds", status=408
        ) from None
    return b"".join(chunks)
