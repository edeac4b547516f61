"""GREEN-API failures as delivery errors, in words an operator can act on (spec 2.6).

| answer                         | error                                             |
| ------------------------------ | ------------------------------------------------- |
| no connection / connect timeout| TemporaryError (nothing left: resending is safe)  |
| read timeout, dropped reply    | AmbiguousError for sends (the queue may hold it)  |
| 429, 5xx                       | TemporaryError, honouring Retry-After             |
| 466 plan quota                 | PermanentError `quota_exceeded` (monthly; retrying cannot help) |
| 401 / 403 token refused        | PermanentError `unauthorized`                     |
| other 4xx (400 validation)     | PermanentError with GREEN-API's message           |

The API token travels in the URL path, so no text here ever includes a URL, and every
text is scrubbed of the configured secrets and of `token=` query strings on top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import httpx

from gateway import AmbiguousError, DeliveryError, PermanentError, TemporaryError

# Raised before the request could reach GREEN-API: a resend cannot double anything.
NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
_TOKEN_QUERY = re.compile(r"(?i)([?&]?\b[\w-]*token=)[^&\s'\"]*")
_MAX_TEXT = 300


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without secret values or `token=` query strings."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_QUERY.sub(r"\1***", text)


def transport_error(
    exc: httpx.HTTPError, method: str, *, may_duplicate: bool, secrets: Iterable[str] = ()
) -> TemporaryError:
    """A network failure talking to `method`; ambiguous only when a send may have landed."""
    kind = type(exc).__name__
    if isinstance(exc, NOT_SENT):
        return TemporaryError(scrub(f"cannot reach GREEN-API for {method}: {kind}", secrets))
    if may_duplicate:
        return AmbiguousError(
            scrub(f"no answer from GREEN-API to {method} after sending ({kind})", secrets)
        )
    return TemporaryError(scrub(f"no answer from GREEN-API to {method} ({kind})", secrets))


def response_error(
    response: httpx.Response, method: str, secrets: Iterable[str] = ()
) -> DeliveryError:
    """The error for a non-2xx answer to `method`."""
    status = response.status_code
    body = _json(response)
    detail = scrub(_detail(body) or response.reason_phrase or "", secrets)
    where = f"GREEN-API {method}: HTTP {status}"
    if status == 429:
        return TemporaryError(
            f"{where}, too many requests{_tail(detail)}",
            code="429",
            retry_after=_retry_after(response),
        )
    if status >= 500:
        return TemporaryError(
            f"{where}{_tail(detail)}", code=str(status), retry_after=_retry_after(response)
        )
    if status == 466:
        return PermanentError(
            f"{where}: the instance's GREEN-API plan quota is used up{_tail(_quota(body))}; "
            "upgrade the plan or wait for the monthly reset, then replay",
            code="quota_exceeded",
        )
    if status in (401, 403):
        return PermanentError(
            f"{where}: GREEN-API refused the instance's credentials; check id_instance and "
            "api_token in the settings",
            code="unauthorized",
        )
    return PermanentError(f"{where}{_tail(detail)}", code=str(status))


def _tail(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "…"
    return f": {text}" if text else ""


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _detail(body: Any) -> str:
    # GREEN's error bodies carry `path`, which holds the token: only `message` is read.
    if isinstance(body, dict):
        for key in ("message", "error", "description"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _quota(body: Any) -> str:
    """`invokeStatus` / `correspondentsStatus` of a 466 body, spelled QUOTE or QUOTA."""
    if not isinstance(body, dict):
        return ""
    parts = []
    for key in ("invokeStatus", "correspondentsStatus"):
        part = body.get(key)
        if isinstance(part, dict):
            status = str(part.get("status") or "")
            description = str(part.get("description") or "")
            used, total = part.get("used"), part.get("total")
            counts = f" ({used}/{total})" if used is not None and total is not None else ""
            parts.append(f"{status}{counts} {description}".strip())
    return "; ".join(p for p in parts if p)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
