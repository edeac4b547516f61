"""Calls to one Chat API instance: `{base_url}/{method}?token=...`, errors mapped for the core.

Every failure becomes a `DeliveryError` the pipeline understands: temporary (429, 5xx, the
request never left), ambiguous (a send whose answer was lost after the request left) or
permanent (refused: bad token, bad number, `sent: false`), with the provider's own words
kept and the token never in any text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gateway import AmbiguousError, DeliveryError, PermanentError, TemporaryError

# Failures that prove the request never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_TOKEN = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
_MAX_TEXT = 300


def scrub(text: str) -> str:
    """`text` without token values, shortened: it ends up in logs and CRM notices."""
    cleaned = _TOKEN.sub(r"\1***", text)
    return cleaned if len(cleaned) <= _MAX_TEXT else cleaned[:_MAX_TEXT] + "..."


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a send method answered: the message id (Chat API always gives one [V])."""

    id: str | None
    message: str
    queue_number: int | None = None


class ChatApiClient:
    """HTTP calls to one instance over the gateway's shared client."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._token = token

    async def send(self, method: str, body: Mapping[str, Any]) -> SendResult:
        """POST a send method; raises unless the answer says `sent: true`."""
        data = await self.call(method, json=body, sending=True)
        if not isinstance(data, dict):
            raise AmbiguousError(f"Chat API {method} answered something unexpected")
        if data.get("sent") is True:
            raw_id = data.get("id")
            queue = data.get("queueNumber")
            return SendResult(
                id=str(raw_id) if raw_id else None,
                message=str(data.get("message") or ""),
                queue_number=queue if isinstance(queue, int) else None,
            )
        reason = data.get("message") or data.get("error")
        if data.get("sent") is False or reason:
            text = scrub(str(reason or "the message was not sent"))
            raise PermanentError(f"Chat API did not send it: {text}", code="not_sent")
        raise AmbiguousError(f"Chat API {method} answered without saying whether it sent")

    async def status(self) -> dict[str, Any]:
        data = await self.call("status", http_method="GET")
        if not isinstance(data, dict):
            raise TemporaryError("Chat API status answered something unexpected")
        return data

    async def qr_code(self) -> bytes:
        """The current QR code as PNG bytes (404 when the account is not waiting for one)."""
        response = await self._request("qr_code", "GET", None, None, sending=False)
        _raise_for_status(response, "qr_code", sending=False)
        return response.content

    async def update_settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        data = await self.call("settings", json=values)
        return data if isinstance(data, dict) else {}

    async def messages(
        self, after: int, limit: int, *, last: bool = False, min_time: int | None = None
    ) -> dict[str, Any]:
        """`/messages`: numbered after `after`, `limit` of them (the last ones with `last`),
        none older than `min_time` (unix seconds)."""
        params: dict[str, Any] = {"lastMessageNumber": after, "limit": limit}
        if last:
            params["last"] = 1
        if min_time is not None:
            params["min_time"] = min_time
        data = await self.call("messages", http_method="GET", params=params)
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise TemporaryError("Chat API messages answered without a messages list")
        return data

    async def call(
        self,
        method: str,
        *,
        http_method: str = "POST",
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        sending: bool = False,
    ) -> Any:
        """One API call, its JSON answer; `sending` marks calls that change the world."""
        response = await self._request(method, http_method, params, json, sending=sending)
        _raise_for_status(response, method, sending=sending)
        try:
            return response.json()
        except ValueError:
            error = AmbiguousError if sending else TemporaryError
            raise error(
                f"Chat API {method} answered HTTP 200 with a body that is not JSON"
            ) from None

    async def _request(
        self,
        method: str,
        http_method: str,
        params: Mapping[str, Any] | None,
        json: Mapping[str, Any] | None,
        *,
        sending: bool,
    ) -> httpx.Response:
        query = {**(params or {}), "token": self._token}
        url = f"{self.base_url}/{method}"
        try:
            return await self.http.request(http_method, url, params=query, json=json)
        except _NOT_SENT as exc:
            raise TemporaryError(_transport_text(method, exc, "cannot reach")) from None
        except httpx.TransportError as exc:
            if sending:
                raise AmbiguousError(_transport_text(method, exc, "no answer from")) from None
            raise TemporaryError(_transport_text(method, exc, "no answer from")) from None


def _transport_text(method: str, exc: Exception, what: str) -> str:
    # httpx messages may quote the URL, token and all; the exception type says enough.
    return f"{what} Chat API ({method}): {type(exc).__name__}"


def _raise_for_status(response: httpx.Response, method: str, *, sending: bool) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = scrub(_provider_text(response))
    text = f"Chat API {method}: HTTP {status}" + (f": {reason}" if reason else "")
    error: DeliveryError
    if status == 429:
        error = TemporaryError(text, code="429", retry_after=_retry_after(response))
    elif status == 504 and sending:
        # A gateway timeout in front of the API: the send may have been queued behind it.
        error = AmbiguousError(text, code="504")
    elif status >= 500 or status == 408:
        error = TemporaryError(text, code=str(status), retry_after=_retry_after(response))
    elif status in (401, 403):
        error = PermanentError(text + " (check the instance token)", code="unauthorized")
    elif status == 404:
        error = PermanentError(text + " (check base_url)", code="not_found")
    elif status == 402:
        error = PermanentError(text + " (the instance is not paid)", code="payment_required")
    else:
        error = PermanentError(text, code=str(status))
    raise error


def _provider_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to leave to the backoff
