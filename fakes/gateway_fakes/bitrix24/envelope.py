"""Response envelopes and error bodies exactly as the Bitrix REST server writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

OPERATING_WINDOW = 600.0

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class RestError(Exception):
    """A REST failure: becomes `{"error": code, "error_description": ...}`."""

    def __init__(self, status: int, code: str, description: str = "", **extra: Any) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description, **self.extra}


def argument_null(name: str) -> RestError:
    return RestError(400, "ERROR_ARGUMENT", f"Argument '{name}' is null or empty")


def argument(description: str) -> RestError:
    return RestError(400, "ERROR_ARGUMENT", description)


def not_active_line() -> RestError:
    return RestError(400, "NOT_ACTIVE_LINE", "The line with this ID is inactive or does not exist")


def wrong_auth_type() -> RestError:
    return RestError(403, "WRONG_AUTH_TYPE", "Application context required")


# Each call builds a fresh exception: re-raising one shared instance grows its traceback.
_SYSTEM = {
    "NO_AUTH_FOUND": (401, "Wrong authorization data"),
    "invalid_token": (401, "The access token provided is invalid."),
    "expired_token": (401, "The access token provided has expired."),
    "insufficient_scope": (403, ""),
    "QUERY_LIMIT_EXCEEDED": (503, "Too many requests"),
    "INTERNAL_SERVER_ERROR": (500, "Internal server error"),
    "ERROR_METHOD_NOT_FOUND": (404, "Method not found!"),
}


def system_error(code: str) -> RestError:
    """One of the system errors of spec 2.3, with its HTTP status and text."""
    status, description = _SYSTEM[code]
    return RestError(status, code, description)


def time_block(start: float, finish: float, *, operating_reset_at: float) -> dict[str, Any]:
    """The `time` object of every answer (cloud adds the `operating*` keys)."""

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": iso(start),
        "date_finish": iso(finish),
        "operating_reset_at": int(operating_reset_at),
        "operating": 0,
    }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        media_type="application/json; charset=utf-8",
        headers=headers,
    )


def fault_response(kind: str) -> Response:
    """Transport-level failures (`503`, `500`, `html502`) of the REST and OAuth endpoints."""
    if kind == "html502":
        return Response(HTML_502, status_code=502, media_type="text/html")
    error = system_error("INTERNAL_SERVER_ERROR" if kind == "500" else "QUERY_LIMIT_EXCEEDED")
    return json_response(error.body(), error.status)


@dataclass
class CallContext:
    """Who is calling: an app token (app context) or a webhook, and as which user."""

    token: str | None
    user_id: int
    app_context: bool = True


def require_app(ctx: CallContext) -> None:
    if not ctx.app_context:
        raise wrong_auth_type()
