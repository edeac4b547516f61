"""Webhook posting and the control API shared by the fake Chat API and GREEN-API servers."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.testing.fake_common import jsonable

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# Webhooks


@dataclass
class WebhookAttempt:
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    attempt: int
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        # Both providers count only an exact 200 as delivered (spec 1.6, 2.5).
        return self.status == 200


@dataclass
class DeliveryReport:
    """What one `deliver_webhooks()` call did."""

    attempts: list[WebhookAttempt] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [a.body for a in self.attempts]

    def merge(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            self.attempts + other.attempts,
            self.delivered + other.delivered,
            self.failed + other.failed,
            self.dropped + other.dropped,
            other.pending,
        )


async def post_webhook(
    http: httpx.AsyncClient | None,
    url: str,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    wait_seconds: float,
    attempt: int,
    at: float,
) -> WebhookAttempt:
    """POST one webhook; network errors and timeouts become a failed attempt, not a raise."""
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    payload = json.dumps(body, ensure_ascii=False).encode()
    status: int | None = None
    error: str | None = None
    try:
        if http is None:
            async with httpx.AsyncClient() as client:
                resp = await client.post(
                    url, content=payload, headers=sent_headers, timeout=wait_seconds
                )
        else:
            resp = await http.post(url, content=payload, headers=sent_headers, timeout=wait_seconds)
        status = resp.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return WebhookAttempt(url, body, sent_headers, attempt, status, error, at)


# ------------------------------------------------------------------------------------------
# Control API and standalone server


def control_routes(
    actions: Mapping[str, Callable[..., Any]], views: Mapping[str, Callable[[], Any]]
) -> list[Route]:
    """`POST /_fake/<action>` with JSON keyword arguments, `GET /_fake/<view>`.

    Lets a demo or a non-Python test drive a standalone fake; in-process tests call the
    Python methods directly.
    """

    async def act(request: Request) -> Response:
        action = actions.get(request.path_params["name"])
        if action is None:
            return JSONResponse({"error": f"unknown action; known: {sorted(actions)}"}, 404)
        raw = await request.body()
        kwargs = json.loads(raw) if raw.strip() else {}
        if not isinstance(kwargs, dict):
            return JSONResponse({"error": "body must be a JSON object of keyword args"}, 400)
        try:
            result = action(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except (TypeError, ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"result": jsonable(result)})

    async def view(request: Request) -> Response:
        getter = views.get(request.path_params["name"])
        if getter is None:
            return JSONResponse({"error": f"unknown view; known: {sorted(views)}"}, 404)
        return JSONResponse(jsonable(getter()))

    return [
        Route("/_fake/{name}", act, methods=["POST"]),
        Route("/_fake/{name}", view, methods=["GET"]),
    ]


def delivery_lifespan(
    deliver: Callable[[], Awaitable[object]], interval: float
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan that keeps pushing webhooks, for the standalone server only."""

    async def loop() -> None:
        while True:
            try:
                await deliver()
            except Exception:
                log.exception("fake provider: webhook delivery pass failed")
            await anyio.sleep(interval)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            yield
            tg.cancel_scope.cancel()

    return lifespan
