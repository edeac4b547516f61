"""The Starlette app: Graph routes, the lookaside media host, and call recording.

One app serves both hosts (`graph.facebook.com` and `lookaside.fbsbx.com`): their paths do not
overlap, so tests mount the same app under both base URLs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .control import control_routes
from .errors import GraphError, param_error, unknown_node
from .sending import handle_messages
from .state import Call, Fault
from .templates import list_templates

if TYPE_CHECKING:
    from .server import FakeCloudApi

JSON = Any
Handler = Callable[["FakeCloudApi", Request, Call], Awaitable[JSON]]

PHONE_NODE = "WhatsAppBusinessPhoneNumber"
DEFAULT_PHONE_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
    "webhook_configuration",
    "id",
)
MB = 1024 * 1024
# (mime type prefix or exact type, size limit) per Meta's "supported media types" table
MEDIA_LIMITS: dict[str, int] = {
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "image/webp": 500 * 1024,
    "audio/aac": 16 * MB,
    "audio/amr": 16 * MB,
    "audio/mpeg": 16 * MB,
    "audio/mp4": 16 * MB,
    "audio/ogg": 16 * MB,
    "video/mp4": 16 * MB,
    "video/3gpp": 16 * MB,
    "text/plain": 100 * MB,
    "text/csv": 100 * MB,
    "application/pdf": 100 * MB,
}
DOCUMENT_PREFIXES = ("application/vnd.", "application/msword")


def build_app(fake: FakeCloudApi) -> Starlette:
    graph = [
        Route("/{version}/{node}/messages", _wrap(fake, "messages", _messages), methods=["POST"]),
        Route("/{version}/{node}/media", _wrap(fake, "media", _upload), methods=["POST"]),
        Route("/{version}/{node}/phone_numbers", _wrap(fake, "node", _phone_numbers)),
        Route("/{version}/{node}/message_templates", _wrap(fake, "templates", _templates)),
        Route("/{version}/{node}", _wrap(fake, "node", _node), methods=["GET", "DELETE"]),
    ]
    download = _wrap(fake, "download", _download, graph=False)
    lookaside = [
        Route("/whatsapp_business/attachments/", download),
        Route("/whatsapp_business/attachments", download),
    ]
    return Starlette(routes=[*lookaside, *control_routes(fake), *graph])


def _wrap(fake: FakeCloudApi, kind: str, handler: Handler, *, graph: bool = True) -> Any:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        call = Call(
            method=request.method,
            host=request.url.hostname or "",
            path=request.url.path,
            query=dict(request.query_params),
            headers=dict(request.headers),
            body=body,
            json=_parse_json(body),
            at=fake.clock(),
        )
        fake.calls.append(call)
        fault: Fault | None = None
        try:
            if graph:
                _check_version(request.path_params["version"])
                _check_auth(fake, request)
            fault = fake.take_fault(kind)
            if fault is not None and not fault.timeout:
                return _fault_response(fake, fault, call)
            if fault is not None and not fault.after_accept:
                await _time_out(fake, call)
            result = await handler(fake, request, call)
        except GraphError as exc:
            envelope = exc.envelope(fake.ids.fbtrace())
            call.status, call.response = exc.http_status, envelope
            headers = {}
            if exc.code == 190:
                headers["WWW-Authenticate"] = 'OAuth "Facebook Platform" "invalid_token"'
            return JSONResponse(envelope, status_code=exc.http_status, headers=headers)
        if fault is not None:
            await _time_out(fake, call)
        if isinstance(result, Response):
            call.status = result.status_code
            return result
        call.status, call.response = 200, result
        return JSONResponse(result)

    return endpoint


def _parse_json(body: bytes) -> JSON:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _check_version(version: str) -> None:
    major, dot, minor = version.removeprefix("v").partition(".")
    if not (version.startswith("v") and dot and major.isdigit() and minor.isdigit()):
        raise GraphError(
            2500, f"Unknown path components: /{version}", http_status=400, whatsapp=False
        )


def _check_auth(fake: FakeCloudApi, request: Request) -> None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    token = token or request.query_params.get("access_token")
    if not token:
        raise GraphError(104)
    if token != fake.access_token:
        raise GraphError(190)
    if fake.token_expired:
        raise GraphError(
            190,
            "Error validating access token: Session has expired. The current time is after "
            "the token's expiry time.",
            subcode=463,
        )


def _fault_response(fake: FakeCloudApi, fault: Fault, call: Call) -> Response:
    if fault.html:
        status = fault.http_status or 502
        call.status = status
        page = f"<html><body><h1>{status} Bad Gateway</h1></body></html>"
        return HTMLResponse(page, status_code=status)
    exc = GraphError(fault.code, http_status=fault.http_status)
    envelope = exc.envelope(fake.ids.fbtrace())
    call.status, call.response = exc.http_status, envelope
    return JSONResponse(envelope, status_code=exc.http_status)


async def _time_out(fake: FakeCloudApi, call: Call) -> None:
    call.status, call.response = None, None
    if fake.timeout_hang is not None:
        # Standalone mode: hold the connection so a real client hits its own timeout.
        await anyio.sleep(fake.timeout_hang)
    raise httpx.ReadTimeout("fake Cloud API: simulated timeout")


def _node_of(fake: FakeCloudApi, request: Request, expected: str) -> None:
    node = request.path_params["node"]
    if node != expected:
        raise unknown_node(node, request.method)


async def _messages(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    _node_of(fake, request, fake.phone_number_id)
    return handle_messages(fake, call.json)


async def _upload(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    _node_of(fake, request, fake.phone_number_id)
    try:
        form = await request.form()
    except MultiPartException as exc:  # a broken body: Graph just sees no parameters
        raise param_error("The parameter messaging_product is required.") from exc
    if form.get("messaging_product") != "whatsapp":
        raise param_error("The parameter messaging_product is required.")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise param_error("The parameter file is required.")
    content = await upload.read()
    declared = form.get("type")
    mime = declared if isinstance(declared, str) and declared else upload.content_type or ""
    base = mime.split(";")[0].strip().lower()
    limit = MEDIA_LIMITS.get(base, 100 * MB if base.startswith(DOCUMENT_PREFIXES) else 0)
    if not limit:
        supported = ", ".join(sorted(MEDIA_LIMITS))
        raise param_error(f"Param file must be a file with one of the following types: {supported}")
    if len(content) > limit:
        raise GraphError(131053, details=f"File of {len(content)} bytes exceeds {limit} for {base}")
    media = fake.store_media(content, mime, filename=upload.filename, origin="upload")
    return {"id": media.id}


async def _node(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    node = request.path_params["node"]
    if node == fake.phone_number_id and request.method == "GET":
        return _phone_fields(fake, request.query_params.get("fields"))
    if node == fake.waba_id and request.method == "GET":
        return {"id": fake.waba_id, "name": fake.verified_name, "currency": "USD"}
    media = fake.live_media(node)
    if media is None:
        raise unknown_node(node, request.method)
    if request.method == "DELETE":
        media.deleted = True
        return {"success": True}
    scope = request.query_params.get("phone_number_id")
    if scope is not None and scope != fake.phone_number_id:
        raise unknown_node(node, request.method)
    return {
        "messaging_product": "whatsapp",
        "url": fake.media_url(media),
        "mime_type": media.mime_type,
        "sha256": media.sha256,
        "file_size": str(media.file_size),  # a string in Meta's JSON
        "id": media.id,
    }


async def _templates(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    _node_of(fake, request, fake.waba_id)
    return list_templates(fake, request)


async def _phone_numbers(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    _node_of(fake, request, fake.waba_id)
    row = _phone_fields(fake, request.query_params.get("fields"))
    cursor = hashlib.sha256(fake.phone_number_id.encode()).hexdigest()[:24]
    return {"data": [row], "paging": {"cursors": {"before": cursor, "after": cursor}}}


def _display(number: str) -> str:
    """Graph formats the number for humans here, unlike the bare digits in webhooks."""
    if len(number) == 11 and number.startswith("1"):
        return f"+1 {number[1:4]}-{number[4:7]}-{number[7:]}"
    return f"+{number}"


def _phone_fields(fake: FakeCloudApi, fields: str | None) -> JSON:
    phone = fake.phone
    can_send = phone.can_send
    health_entity: dict[str, JSON] = {
        "entity_type": "PHONE_NUMBER",
        "id": fake.phone_number_id,
        "can_send_message": can_send,
    }
    if can_send != "AVAILABLE":
        health_entity["errors"] = [
            {
                "error_code": 141000,
                "error_description": f"The phone number is {phone.status}.",
                "possible_solution": "Check the phone number's status in WhatsApp Manager.",
            }
        ]
    waba_entity = {"entity_type": "WABA", "id": fake.waba_id, "can_send_message": "AVAILABLE"}
    available: dict[str, JSON] = {
        "id": fake.phone_number_id,
        "display_phone_number": _display(fake.display_phone_number),
        "verified_name": fake.verified_name,
        "quality_rating": phone.quality_rating,
        "status": phone.status,
        "name_status": phone.name_status,
        "code_verification_status": phone.code_verification_status,
        "messaging_limit_tier": phone.messaging_limit_tier,
        "throughput": {"level": phone.throughput_level},
        "platform_type": phone.platform_type,
        "account_mode": phone.account_mode,
        "is_official_business_account": phone.is_official_business_account,
        "health_status": {"can_send_message": can_send, "entities": [health_entity, waba_entity]},
        "webhook_configuration": {"application": fake.callback_url} if fake.callback_url else {},
    }
    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else []
    for name in wanted:
        if name not in available:
            message = f"Tried accessing nonexisting field ({name}) on node type ({PHONE_NODE})"
            raise GraphError(100, f"(#100) {message}", whatsapp=False)
    selected = wanted or list(DEFAULT_PHONE_FIELDS)
    result = {name: available[name] for name in selected if name != "id"}
    result["id"] = fake.phone_number_id  # Graph always returns the node id
    return result


async def _download(fake: FakeCloudApi, request: Request, call: Call) -> JSON:
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer " or header[7:].strip() != fake.access_token:
        return Response("Unauthorized", status_code=401, media_type="text/plain")
    found = fake.resolve_media_url(request.query_params.get("hash", ""))
    if found is None:
        return Response("Not Found", status_code=404, media_type="text/plain")
    media, expires_at = found
    if fake.clock() > expires_at or media.deleted:
        return Response("URL signature expired", status_code=fake.media_url_expired_status)
    return Response(media.content, media_type=media.mime_type)
