"""JSON error bodies for every refusal and failure the HTTP app answers.

Every error has the shape `{"error": {"status": 404, "message": "...", ...}}` so clients and
operators read one format, whether a route refused the request or something broke.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import RetryLater, WebhookError

logger = logging.getLogger("gateway.http")

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

# A request id a proxy put in front of us is reused so logs on both sides line up; anything
# else (long, odd characters) is replaced, since it ends up in logs and response headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


def error_response(status: int, message: str, **fields: Any) -> JSONResponse:
    """`{"error": {"status": status, "message": message, **fields}}` with that status."""
    return JSONResponse({"error": {"status": status, "message": message, **fields}}, status)


def refusal_response(exc: WebhookError, **fields: Any) -> JSONResponse:
    """The answer to a refused webhook: its status and message, and for `RetryLater` the
    `Retry-After` header that tells the provider when to deliver it again."""
    response = error_response(exc.status, exc.message, **fields)
    if isinstance(exc, RetryLater) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
    return response


def request_id(request: Request) -> str:
    """The caller's `X-Request-ID` when it is sane, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        # These statuses cannot carry a body.
        return Response(status_code=exc.status_code, headers=exc.headers)
    response = error_response(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def webhook_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookError)
    # The message is written by our own code for the caller (it says what is wrong with the
    # request), so it is safe to return, unlike the text of an unexpected exception.
    return refusal_response(exc)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    logger.exception(
        "unhandled error in %s %s (request id %s)",
        request.method,
        request.url.path,
        rid,
        exc_info=exc,
    )
    # Exception text may hold tokens or customer data; the request id lets an operator find
    # the traceback in the logs instead.
    response = error_response(500, "internal error", request_id=rid)
    response.headers["X-Request-ID"] = rid
    return response


def exception_handlers() -> dict[Any, ErrorHandler]:
    """Handlers for `Starlette(exception_handlers=...)`.

    Starlette hands the `Exception` handler to its outermost middleware, which sends our
    JSON 500 and then re-raises so the server also sees the failure.
    """
    return {
        HTTPException: http_exception_handler,
        WebhookError: webhook_error_handler,
        Exception: internal_error_handler,
    }
