"""Pieces shared by fake WhatsApp provider servers (`gateway_fakes.chatapi`, `.greenapi`).

Both fakes are in-process Starlette apps meant for tests, the demo and plugin authors. They
share: an injectable clock, deterministic ids, a tiny PNG writer for QR images, fault
injection (per-method knobs and magic recipient numbers), a record of every API call, a
webhook poster that never raises for delivery failures, a media store served by the fake
itself, and a small control API for driving a standalone fake over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import StrEnum
from typing import Any, Literal

import anyio
import httpx
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch. Fakes default to a `ManualClock` so payloads are reproducible."""

DEFAULT_EPOCH = 1_700_000_000.0


class ManualClock:
    """A clock that moves only when told to; retries and expiries become explicit steps."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock never goes backwards")
        self._now = float(when)


class IdGen:
    """Provider-looking hex ids that depend only on the seed and how many were made before."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._n = 0

    def hex(self, length: int, prefix: str = "") -> str:
        self._n += 1
        digest = ""
        block = 0
        while len(prefix) + len(digest) < length:
            digest += hashlib.sha256(f"{self._seed}:{self._n}:{block}".encode()).hexdigest()
            block += 1
        return (prefix + digest.upper())[:length]


# ------------------------------------------------------------------------------------------
# PNG / QR


def png_bytes(rows: Sequence[Sequence[bool]], scale: int = 4) -> bytes:
    """A 1-bit greyscale PNG where True is a dark pixel; written by hand to avoid Pillow."""
    if not rows or not rows[0]:
        raise ValueError("empty image")
    width, height = len(rows[0]) * scale, len(rows) * scale
    raw = bytearray()
    for row in rows:
        bits = [not dark for dark in row for _ in range(scale)]  # 1 = white in greyscale
        packed = bytearray()
        for i in range(0, len(bits), 8):
            byte = 0
            for j, bit in enumerate(bits[i : i + 8]):
                byte |= int(bit) << (7 - j)
            packed.append(byte)
        line = b"\x00" + bytes(packed)
        raw += line * scale

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


def qr_matrix(seed: str, size: int = 29) -> list[list[bool]]:
    """A QR-looking module grid (finder and timing patterns, hashed data), not scannable."""
    stream = b""
    counter = 0
    while len(stream) * 8 < size * size:
        stream += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    grid = [
        [bool(stream[(y * size + x) // 8] >> ((y * size + x) % 8) & 1) for x in range(size)]
        for y in range(size)
    ]
    for i in range(size):
        grid[6][i] = grid[i][6] = i % 2 == 0
    for ox, oy in ((0, 0), (size - 7, 0), (0, size - 7)):
        for y in range(-1, 8):
            for x in range(-1, 8):
                gx, gy = ox + x, oy + y
                if not (0 <= gx < size and 0 <= gy < size):
                    continue
                ring = max(abs(x - 3), abs(y - 3))
                grid[gy][gx] = ring in (0, 1, 3) if ring <= 3 else False
    quiet = 4
    blank = [False] * (size + 2 * quiet)
    framed = [list(blank) for _ in range(quiet)]
    framed += [[False] * quiet + row + [False] * quiet for row in grid]
    framed += [list(blank) for _ in range(quiet)]
    return framed


def qr_png(seed: str) -> bytes:
    return png_bytes(qr_matrix(seed), scale=4)


# ------------------------------------------------------------------------------------------
# Magic recipients


class Magic(StrEnum):
    """Recipient numbers whose last six digits trigger a scripted outcome on send.

    Six digits starting with 99 keep ordinary test numbers (79000000000, 79001234567)
    out of the way; build one with `magic_phone(Magic.NO_ACCOUNT)` -> "79000990404".
    """

    NO_ACCOUNT = "990404"  # recipient has no WhatsApp (GREEN status noAccount)
    FAILED = "990400"  # accepted, then the send fails (GREEN status failed)
    NOT_IN_GROUP = "990403"  # GREEN status notInGroup (meant for group ids)
    YELLOW_CARD = "990451"  # GREEN status yellowCard and the instance turns yellowCard
    NEVER_DELIVERED = "990202"  # stays "sent": auto acks/statuses beyond sent are skipped
    RATE_LIMITED = "990429"  # every send answers HTTP 429
    SERVER_ERROR = "990500"  # every send answers HTTP 500
    TIMEOUT = "990408"  # every send times out before it takes effect
    TIMEOUT_AFTER_EFFECT = "990504"  # the send is queued, then the response times out
    QUOTA = "990466"  # GREEN: HTTP 466 plan quota exceeded


def magic_phone(magic: Magic, prefix: str = "79000") -> str:
    return prefix + magic.value


def magic_of(chat: str) -> Magic | None:
    digits = re.sub(r"\D", "", chat.split("@", 1)[0])
    for magic in Magic:
        if digits.endswith(magic.value):
            return magic
    return None


def to_chat_id(chat_or_phone: str | int) -> str:
    """`79001234567`, `+7 900 123-45-67` or a ready chat id -> `79001234567@c.us`."""
    text = str(chat_or_phone).strip()
    if "@" in text:
        return text
    digits = re.sub(r"\D", "", text)
    if not digits:
        raise ValueError(f"not a phone number or chat id: {chat_or_phone!r}")
    return f"{digits}@c.us"


def is_group(chat_id: str) -> bool:
    return chat_id.endswith("@g.us")


# ------------------------------------------------------------------------------------------
# Faults

FaultKind = Literal[
    "rate_limit",  # HTTP 429
    "server_error",  # HTTP 500
    "bad_gateway",  # HTTP 502
    "unavailable",  # HTTP 503
    "unauthorized",  # HTTP 401
    "quota",  # GREEN HTTP 466 (Chat API: 402)
    "timeout",  # no response; the call has no effect
    "timeout_after_effect",  # the call takes effect, then no response
    "disconnect",  # connection dropped; the call has no effect
]
FAULT_STATUS: dict[str, int] = {
    "rate_limit": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "unauthorized": 401,
    "quota": 466,
}


@dataclass
class Fault:
    kind: FaultKind
    retry_after: float | None = None


@dataclass
class _FaultRule:
    method: str
    kind: FaultKind
    remaining: int | None  # None = until cleared
    retry_after: float | None


class Faults:
    """Per-method failure knobs: `fail_next("sendMessage", 2, "rate_limit")`.

    Timeouts raise `httpx.ReadTimeout` inside the app, which `httpx.ASGITransport`
    hands to the client as if the network timed out. Over a real socket that would be a
    500, so the standalone server switches `timeout_behaviour` to "hang".
    """

    def __init__(self) -> None:
        self._rules: list[_FaultRule] = []
        self.timeout_behaviour: Literal["raise", "hang"] = "raise"
        self.hang_seconds = 30.0

    def fail_next(
        self,
        method: str = "*",
        count: int | None = 1,
        kind: FaultKind = "server_error",
        *,
        retry_after: float | None = None,
    ) -> None:
        """Fail the next `count` calls of `method` ("*" = any; count None = until `clear`)."""
        self._rules.append(_FaultRule(method.lower(), kind, count, retry_after))

    def clear(self) -> None:
        self._rules.clear()

    def take(self, method: str) -> Fault | None:
        name = method.lower()
        for rule in self._rules:
            if rule.method in ("*", name):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return Fault(rule.kind, rule.retry_after)
        return None


class FakeHttpError(Exception):
    """Raised by endpoint code to answer with a provider-shaped error."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class FakeTimeout(Exception):
    """Raised by endpoint code to drop the response; `after_effect` if the call took effect."""

    def __init__(self, *, after_effect: bool) -> None:
        super().__init__("fake provider: no response")
        self.after_effect = after_effect


async def no_response(faults: Faults, kind: str) -> Response:
    if kind == "disconnect":
        raise httpx.RemoteProtocolError("fake provider: server disconnected without a response")
    if faults.timeout_behaviour == "hang":
        await anyio.sleep(faults.hang_seconds)
        return JSONResponse({"error": "fake provider: timed out"}, status_code=504)
    raise httpx.ReadTimeout("fake provider: no response (injected timeout)")


# ------------------------------------------------------------------------------------------
# Requests and records


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Result:
    """What an endpoint answers; the dispatcher records it and turns it into a Response."""

    body: Any
    status: int = 200
    media_type: str = "application/json"
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if self.raw is not None:
            return Response(self.raw, self.status, self.headers, media_type=self.media_type)
        return Response(
            json.dumps(self.body, ensure_ascii=False).encode(),
            self.status,
            self.headers,
            media_type="application/json",
        )


@dataclass
class CallRecord:
    """One API call the gateway made. `status` is None when no response was given."""

    method: str
    http_method: str
    path: str
    params: dict[str, Any]
    files: dict[str, Upload]
    status: int | None
    response: Any
    fault: str | None
    at: float


async def read_params(request: Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    """Query string merged with a JSON, form or multipart body (providers accept all three)."""
    params: dict[str, Any] = dict(request.query_params)
    files: dict[str, Upload] = {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        async with request.form() as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files[key] = Upload(
                        value.filename or "",
                        value.content_type or "application/octet-stream",
                        await value.read(),
                    )
                else:
                    params[key] = value
        return params, files
    raw = await request.body()
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            if ctype == "application/json":
                raise FakeHttpError(400, {"error": "body is not valid JSON"}) from None
            files["body"] = Upload("", ctype or "application/octet-stream", raw)
        else:
            if not isinstance(body, dict):
                raise FakeHttpError(400, {"error": "JSON body must be an object"})
            params.update(body)
    return params, files


def jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


Handler = Callable[[dict[str, Any], dict[str, Upload]], Awaitable[Result]]


async def dispatch(
    request: Request,
    *,
    method: str,
    calls: list[CallRecord],
    faults: Faults,
    clock: Clock,
    handler: Handler,
    fault_result: Callable[[Fault, str], Result],
    check: Callable[[dict[str, Any]], None] | None = None,
    hidden: Sequence[str] = (),
) -> Response:
    """Run one provider call: parse, authorise, inject faults, handle, record.

    `check` raises FakeHttpError (bad token, unknown instance); `hidden` names params kept
    out of the record (the token in Chat API's query string).
    """
    params: dict[str, Any] = {}
    files: dict[str, Upload] = {}

    def record(status: int | None, body: Any, fault: str | None = None) -> None:
        shown = {k: v for k, v in params.items() if k not in hidden}
        calls.append(
            CallRecord(
                method, request.method, request.url.path, shown, files, status, body, fault, clock()
            )
        )

    fault: Fault | None = None
    try:
        params, files = await read_params(request)
        if check is not None:
            check(params)
        fault = faults.take(method)
        if fault is not None and fault.kind in ("timeout", "disconnect"):
            record(None, None, fault.kind)
            return await no_response(faults, fault.kind)
        if fault is not None and fault.kind != "timeout_after_effect":
            result = fault_result(fault, method)
            record(result.status, result.body, fault.kind)
            return result.response()
        result = await handler(params, files)
    except FakeHttpError as exc:
        record(exc.status, exc.body, fault.kind if fault else None)
        return Result(exc.body, exc.status, headers=exc.headers).response()
    except FakeTimeout as exc:
        record(None, None, "timeout_after_effect" if exc.after_effect else "timeout")
        return await no_response(faults, "timeout")
    if fault is not None:
        record(None, result.body, fault.kind)
        return await no_response(faults, "timeout")
    record(result.status, result.body if result.raw is None else f"<{len(result.raw)} bytes>")
    return result.response()


# ------------------------------------------------------------------------------------------
# Media


EXT_MIME: dict[str, str] = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "3gp": "video/3gpp",
    "mov": "video/quicktime",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "wav": "audio/wav",
    "amr": "audio/amr",
    "pdf": "application/pdf",
    "txt": "text/plain",
    "csv": "text/csv",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
    "vcf": "text/vcard",
}
MIME_EXT: dict[str, str] = {mime: ext for ext, mime in reversed(list(EXT_MIME.items()))}


def ext_of(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def mime_of(filename: str) -> str:
    return EXT_MIME.get(ext_of(filename), "application/octet-stream")


def media_kind(filename: str) -> Literal["image", "video", "audio", "document"]:
    """How WhatsApp shows a file: decided by the extension, as both providers do."""
    mime = mime_of(filename)
    if mime.startswith("image/") and mime != "image/webp":
        return "image"
    if mime.startswith("video/"):
        return "video"
    if mime.startswith("audio/"):
        return "audio"
    return "document"


SAMPLE_NAMES: dict[str, str] = {
    "image": "photo.jpg",
    "video": "clip.mp4",
    "audio": "voice.ogg",
    "ptt": "voice.ogg",
    "voice": "voice.ogg",
    "document": "file.pdf",
    "sticker": "sticker.webp",
}


def sample_bytes(filename: str, seed: str) -> bytes:
    """Small deterministic file contents; images are real PNG bytes whatever the extension."""
    if media_kind(filename) == "image" or ext_of(filename) == "webp":
        return png_bytes(qr_matrix(seed, size=9), scale=1)
    if ext_of(filename) == "pdf":
        return b"%PDF-1.4\n% fake document " + seed.encode() + b"\n%%EOF\n"
    return b"fake media " + seed.encode()


class MediaStore:
    """Files the fake hosts itself, so the gateway can download them through the same app."""

    PATH = "/_fake/files"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.files: dict[str, tuple[bytes, str]] = {}

    def put(self, name: str, data: bytes, mime: str | None = None) -> str:
        self.files[name] = (data, mime or mime_of(name))
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base_url}{self.PATH}/{name}"

    def route(self) -> Route:
        async def serve(request: Request) -> Response:
            found = self.files.get(request.path_params["name"])
            if found is None:
                return JSONResponse({"error": "file not found"}, status_code=404)
            return Response(found[0], media_type=found[1])

        return Route(self.PATH + "/{name:path}", serve, methods=["GET"])
