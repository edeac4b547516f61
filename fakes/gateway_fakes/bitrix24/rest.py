"""The HTTP face of the portal: `/rest/{method}[.json]`, webhooks, file links.

Order of checks for one request, outermost first (as in front of a real portal):
domain moved (302) → injected fault → leaky bucket (503) → token (401) →
method (404) → scope (403) → operation-time block (429) → the method itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .envelope import RestError, fault_response, json_response, system_error
from .formdata import parse_query, php_form_decode
from .state import RestCall

if TYPE_CHECKING:
    from .portal import FakePortal


async def read_params(request: Request) -> dict[str, Any]:
    """Merge query and body like PHP's `$_REQUEST` (the body wins)."""
    params = parse_query(request.url.query)
    body = await request.body()
    if not body:
        return params
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        pairs = [
            (k, v if isinstance(v, str) else (v.filename or "")) for k, v in form.multi_items()
        ]
        params.update(php_form_decode(pairs))
        return params
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RestError(200, "WRONG_ENCODING", "Wrong request encoding") from None
    looks_json = ctype != "application/x-www-form-urlencoded" and text.lstrip().startswith("{")
    if ctype == "application/json" or looks_json:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RestError(400, "INVALID_REQUEST", "Invalid JSON body")
        params.update(data)
    else:
        params.update(parse_query(text))
    return params


def _relocate(portal: FakePortal, request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{portal.base_url}{request.url.path}{query}", status_code=302)


def _finish(call: RestCall, response: Response, code: str | None = None) -> Response:
    call.status = response.status_code
    call.error = code
    return response


def _fault(portal: FakePortal, call: RestCall, request: Request) -> tuple[Response | None, float]:
    """Apply a queued fault: an immediate answer, or extra delay for `timeout`."""
    fault = portal.faults.take(call.method)
    if fault is None:
        return None, 0.0
    if fault.kind in ("503", "500", "html502"):
        code = {"503": "QUERY_LIMIT_EXCEEDED", "500": "INTERNAL_SERVER_ERROR"}.get(fault.kind)
        return _finish(call, fault_response(fault.kind), code), 0.0
    if fault.kind == "redirect":
        return _finish(call, _relocate(portal, request)), 0.0
    if fault.kind == "timeout":
        return None, fault.delay
    if fault.kind == "expired_token" and call.token:
        # Expire the token for real, so retrying with it fails until a refresh.
        portal.tokens.expire(call.token)
    if fault.kind in ("expired_token", "invalid_token", "insufficient_scope"):
        error = system_error(fault.kind)
    else:
        error = portal.operation_limit(portal.clock() + 600.0)
    return _finish(call, json_response(error.body(), error.status), error.code), 0.0


async def _serve(portal: FakePortal, call: RestCall, request: Request, webhook: bool) -> Response:
    if request.url.hostname in portal.moved_from:
        return _finish(call, _relocate(portal, request))
    answer, delay = _fault(portal, call, request)
    if answer is not None:
        return answer
    delay += portal.faults.delay_for(call.method)
    started = portal.now()
    try:
        if portal.bucket is not None and not portal.bucket.hit():
            raise system_error("QUERY_LIMIT_EXCEEDED")
        ctx = portal.authenticate(call.token, webhook=webhook)
        outcome = await portal.invoke(call.method, call.params, ctx)
    except RestError as error:
        response = json_response(error.body(), error.status)
        _finish(call, response, error.code)
    else:
        call.result = outcome
        body = {"result": outcome, "time": portal.time_block(started)}
        response = _finish(call, json_response(body))
    if delay > 0:
        await anyio.sleep(delay)
    return response


def routes(portal: FakePortal) -> list[Route]:
    async def rest(request: Request) -> Response:
        parts = request.path_params["path"].strip("/").split("/")
        method = parts[-1].lower().removesuffix(".json")
        call = RestCall(method, {}, None, portal.clock())
        portal.calls.append(call)
        if len(parts) not in (1, 3):
            error = system_error("ERROR_METHOD_NOT_FOUND")
            return _finish(call, json_response(error.body(), error.status), error.code)
        try:
            params = await read_params(request)
        except RestError as error:
            return _finish(call, json_response(error.body(), error.status), error.code)
        token = params.pop("auth", None)
        call.params, call.token = params, token if isinstance(token, str) else None
        response = await _serve(portal, call, request, webhook=len(parts) == 3)
        if portal.auto_flush and portal.pending:
            response.background = BackgroundTask(portal.flush)
        return response

    async def file(request: Request) -> Response:
        code = request.path_params.get("code") or request.query_params.get("token", "")
        stored = portal.state.files.get(code)
        if stored is None:
            return Response("Not found", status_code=404, media_type="text/plain")
        disposition = f'attachment; filename="{stored.name}"'
        return Response(
            stored.content, media_type=stored.mime, headers={"Content-Disposition": disposition}
        )

    return [
        Route("/rest/download.json", file, methods=["GET"]),
        Route("/~{code}", file, methods=["GET"]),
        Route("/rest/{path:path}", rest, methods=["GET", "POST"]),
    ]
