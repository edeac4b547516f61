"""The webhook endpoint as a plain ASGI app, and the lean path that serves it.

Webhooks are nearly all of the gateway's traffic. Starlette's way to them (a `Request`,
the router's regex match over every route, two exception middlewares each wrapping
`send`, a `Response` and a `BackgroundTask`) cost more than the handler itself, so
`WebhookPath` sits in front of the Starlette app: it matches `/webhooks/{instance}` and
`/webhooks/{instance}/{subpath}` by prefix, answers with two `send` calls and turns an
unexpected exception into the answer the app's exception handlers give. Everything else
(other paths, other methods, a `root_path` set by a proxy) goes to Starlette, whose routes
still lead to the same `WebhookEndpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.bodies import BodyDeadlines, read_body
from gateway.errors import RetryLater, StoreError, WebhookError
from gateway.http_errors import error_response, refusal_response
from gateway.observe import Observation
from gateway.providers import WebhookRequest
from gateway.runtime import Gateway

log = logging.getLogger("gateway.http")

#: Retry-After of a webhook the store could not take (a provider may retry sooner).
STORE_RETRY_AFTER = 5
WEBHOOK_METHODS = ["GET", "POST", "PUT", "HEAD"]
PREFIX = "/webhooks/"

_JSON = b"application/json"


class WebhookEndpoint:
    """`/webhooks/{instance}[/{subpath}]`: authenticate, parse and validate (the provider),
    plan and commit (ingest), answer; nothing else runs before the answer. Observations
    are handled once the answer is sent."""

    def __init__(self, gateway: Gateway, body_timeout: float) -> None:
        self._gateway = gateway
        self._body_timeout = body_timeout
        self._deadlines = BodyDeadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As a Starlette route's app: the router put the path parameters in the scope."""
        params = scope["path_params"]
        await self.serve(scope, receive, send, params["instance"], params.get("subpath", ""))

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, instance: str, subpath: str
    ) -> None:
        gateway = self._gateway
        provider = gateway.instances.get(instance)
        if provider is None:
            await error_response(404, f"no instance named {instance!r}")(scope, receive, send)
            return
        try:
            # ASGI header names are lowercase bytes already.
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = await read_body(
                receive,
                headers.get("content-length"),
                gateway.settings.max_body_bytes,
                self._deadlines,
                self._body_timeout,
            )
            query_string = scope["query_string"]
            inbound = WebhookRequest(
                method=scope["method"],
                subpath=subpath,
                headers=headers,
                query=dict(QueryParams(query_string)) if query_string else {},
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
            await refusal_response(exc, instance=instance)(scope, receive, send)
            gateway.notifier.flush()
            return
        except StoreError as exc:
            # Nothing of this request is stored (its transaction, or its group's, did not
            # commit): the provider delivers it again, and dedupe makes that safe.
            log.warning("webhook of %s not stored: %s", instance, exc, extra={"instance": instance})
            refusal = RetryLater(
                "the gateway could not store this webhook; deliver it again",
                retry_after=STORE_RETRY_AFTER,
            )
            await refusal_response(refusal, instance=instance)(scope, receive, send)
            gateway.notifier.flush()
            return
        if result.response is not None:
            # A Starlette response is an ASGI app; it runs its own background task, if any.
            await result.response(scope, receive, send)
        else:
            new = sum(accepted)
            # orjson: the stdlib encoder behind JSONResponse costs more than this tiny body.
            answer = orjson.dumps({"ok": True, "accepted": new, "duplicates": len(accepted) - new})
            # The headers a Starlette `Response(answer, media_type="application/json")` has.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-length", str(len(answer)).encode()),
                        (b"content-type", _JSON),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer})
        gateway.notifier.flush()


Handler = Callable[[Request, Exception], Any]


class WebhookPath:
    """ASGI app: webhook requests to `endpoint` directly, everything else to `app`.

    `handlers` are the app's exception handlers (`Starlette(exception_handlers=...)`):
    an exception escaping the endpoint is answered as Starlette's two exception
    middlewares would, and one only the `Exception` handler takes is raised again after
    its answer, so the server sees it too.
    """

    def __init__(
        self, endpoint: WebhookEndpoint, app: ASGIApp, handlers: Mapping[Any, Handler]
    ) -> None:
        self._endpoint = endpoint
        self._app = app
        # Read when an exception escapes, so handlers added later count as in Starlette.
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX) and scope["method"] in WEBHOOK_METHODS:
                instance, _, subpath = path[len(PREFIX) :].partition("/")
                if instance:
                    await self._webhook(scope, receive, send, instance, subpath)
                    return
        await self._app(scope, receive, send)

    async def _webhook(
        self, scope: Scope, receive: Receive, send: Send, instance: str, subpath: str
    ) -> None:
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        scope["path_params"] = {"instance": instance, "subpath": subpath}
        try:
            await self._endpoint.serve(scope, receive, sender, instance, subpath)
        except Exception as exc:
            await self._failed(scope, receive, send, exc, started)

    async def _failed(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception, started: bool
    ) -> None:
        request = Request(scope, receive)
        handler = self._handler_for(exc)
        if handler is not None and not started:
            response: Response = await handler(request, exc)
            await response(scope, receive, send)
            return
        last_resort = self._handlers.get(Exception) or self._handlers.get(500)
        if last_resort is None:
            raise exc
        response = await last_resort(request, exc)
        if not started:
            await response(scope, receive, send)
        raise exc

    def _handler_for(self, exc: Exception) -> Handler | None:
        """The handler Starlette's `ExceptionMiddleware` would pick: not the last resort
        (`Exception` or 500), which its `ServerErrorMiddleware` holds."""
        handlers = self._handlers
        status = exc.status_code if isinstance(exc, HTTPException) else None
        if status is not None and status != 500 and status in handlers:
            return handlers[status]
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None
