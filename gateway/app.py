"""The HTTP surface: webhooks, health, readiness, metrics, admin API, console, media links."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin import admin_routes
from gateway.bodies import BodyDeadlines, read_body
from gateway.console import console_routes
from gateway.errors import RetryLater, StoreError, WebhookError
from gateway.hookcall import call_each, succeeded
from gateway.http_errors import error_response, exception_handlers, refusal_response
from gateway.metrics import CONTENT_TYPE, record_queue_stats, record_unrouted
from gateway.observe import Observation
from gateway.providers import WebhookRequest
from gateway.runtime import Gateway

log = logging.getLogger("gateway.http")

#: Seconds a client may take to send a request body (providers send theirs at once).
BODY_TIMEOUT = 30.0
#: Retry-After of a webhook the store could not take (a provider may retry sooner).
STORE_RETRY_AFTER = 5
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

    deadlines = BodyDeadlines()

    # Observations (metrics, logs, the observe hook) are handled after the answer is sent.
    async def flush_observations() -> None:
        # On the loop: a plain function given to BackgroundTask would run in a thread.
        gateway.notifier.flush()

    after_answer = BackgroundTask(flush_observations)

    async def webhook(request: Request) -> Response:
        """Authenticate, parse and validate (the provider), plan and commit (ingest),
        answer; nothing else runs before the answer."""
        scope = request.scope
        path_params = scope["path_params"]
        instance = path_params["instance"]
        provider = gateway.instances.get(instance)
        if provider is None:
            return error_response(404, f"no instance named {instance!r}")
        try:
            body = await read_body(
                request, gateway.settings.max_body_bytes, deadlines, BODY_TIMEOUT
            )
            inbound = WebhookRequest(
                method=scope["method"],
                subpath=path_params.get("subpath", ""),
                # ASGI header names are lowercase bytes already.
                headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                query=dict(request.query_params) if scope["query_string"] else {},
                body=body,
            )
            result = await provider.handle_webhook(inbound)
            accepted = await gateway.ingest(instance, result.events) if result.events else []
        except WebhookError as exc:
            gateway.notifier.notify_later(
                Observation(
                    "rejected",
                    instance,
                    detail={"reason": type(exc).__name__.lower(), "status": exc.status},
                )
            )
            return _with_background(refusal_response(exc, instance=instance), after_answer)
        except StoreError as exc:
            # Nothing of this request is stored (its transaction, or its group's, did not
            # commit): the provider delivers it again, and dedupe makes that safe.
            log.warning("webhook of %s not stored: %s", instance, exc, extra={"instance": instance})
            refusal = RetryLater(
                "the gateway could not store this webhook; deliver it again",
                retry_after=STORE_RETRY_AFTER,
            )
            return _with_background(refusal_response(refusal, instance=instance), after_answer)
        if result.response is not None:
            return _with_background(result.response, after_answer)
        new = sum(accepted)
        # orjson: the stdlib encoder behind JSONResponse costs more than this tiny body.
        body = orjson.dumps({"ok": True, "accepted": new, "duplicates": len(accepted) - new})
        return Response(body, media_type="application/json", background=after_answer)

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
        gateway.notifier.flush()
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
    extras = call_each(gateway.host.hook.http_routes, context=gateway.plugin_context)
    for extra in succeeded(extras):
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


def _with_background(response: Response, task: BackgroundTask) -> Response:
    """`response` running `task` once it is sent (after any task it already has)."""
    if response.background is None:
        response.background = task
    else:
        first = response.background

        async def both() -> None:
            await first()
            await task()

        response.background = BackgroundTask(both)
    return response
