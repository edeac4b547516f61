"""Calls to the Graph API for one phone number, with failures as delivery errors.

The bearer token travels only in the `Authorization` header, and every error text is
scrubbed of it, so nothing here can leak it into logs, dead letters or the CRM.
"""

from __future__ import annotations

from typing import Any

import httpx

from gateway import AmbiguousError, TemporaryError
from gateway_cloudapi.config import CloudApiConfig
from gateway_cloudapi.errors import graph_error, scrub

JSON = Any

# Errors raised before the request could reach Meta: resending cannot double anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class GraphClient:
    """The endpoints the channel uses, under `{api_base}/{api_version}`."""

    def __init__(self, http: httpx.AsyncClient, config: CloudApiConfig) -> None:
        self.http = http
        self.config = config
        self.base = config.graph_url
        self.headers = {"Authorization": f"Bearer {config.access_token}"}

    @property
    def auth_headers(self) -> dict[str, str]:
        return dict(self.headers)

    async def send_message(self, payload: dict[str, JSON]) -> dict[str, JSON]:
        """`POST /{pnid}/messages`; a failure after the request left is `AmbiguousError`."""
        url = f"{self.base}/{self.config.phone_number_id}/messages"
        return await self._call("POST", url, json=payload, may_duplicate=True)

    async def mark_read(self, message_id: str) -> dict[str, JSON]:
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        url = f"{self.base}/{self.config.phone_number_id}/messages"
        return await self._call("POST", url, json=payload)

    async def media_info(self, media_id: str) -> dict[str, JSON]:
        """`GET /{media_id}`: a download URL valid for about five minutes, mime type, size."""
        url = f"{self.base}/{media_id}"
        params = {"phone_number_id": self.config.phone_number_id}
        return await self._call("GET", url, params=params)

    async def upload_media(self, content: bytes, mime_type: str, filename: str) -> str:
        """`POST /{pnid}/media` (multipart); the media id to send by."""
        url = f"{self.base}/{self.config.phone_number_id}/media"
        data = {"messaging_product": "whatsapp", "type": mime_type}
        files = {"file": (filename, content, mime_type)}
        # An upload that may have landed only leaves an unused media object: safe to repeat.
        result = await self._call("POST", url, data=data, files=files)
        media_id = result.get("id")
        if not isinstance(media_id, str | int):
            raise TemporaryError("the Cloud API answered an upload without a media id")
        return str(media_id)

    async def get(self, url: str, params: dict[str, str] | None = None) -> dict[str, JSON]:
        """`GET` a Graph URL (a `paging.next` link carries its own query)."""
        return await self._call("GET", url, params=params)

    async def phone_number(self, fields: str) -> dict[str, JSON]:
        url = f"{self.base}/{self.config.phone_number_id}"
        return await self._call("GET", url, params={"fields": fields})

    async def _call(
        self, method: str, url: str, *, may_duplicate: bool = False, **kwargs: Any
    ) -> dict[str, JSON]:
        try:
            response = await self.http.request(method, url, headers=self.headers, **kwargs)
        except _NOT_SENT as exc:
            raise TemporaryError(self._transport_text(exc, "cannot reach")) from None
        except httpx.TransportError as exc:
            # The request left; Meta may have acted on it. Only a send can double.
            error = AmbiguousError if may_duplicate else TemporaryError
            raise error(self._transport_text(exc, "no answer from")) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            if response.status_code < 400:
                # A send may have been accepted all the same.
                error = AmbiguousError if may_duplicate else TemporaryError
                raise error(f"the Cloud API answered HTTP {response.status_code} without JSON")
            raise graph_error(
                response.status_code,
                body,
                response.headers.get("retry-after"),
                secrets=(self.config.access_token,),
            )
        return body

    def _transport_text(self, exc: Exception, verb: str) -> str:
        host = httpx.URL(self.base).host
        return scrub(f"{verb} {host}: {type(exc).__name__}", self.config.access_token)
