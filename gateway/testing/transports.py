"""Transports for end-to-end tests over real HTTP."""

from __future__ import annotations

import httpx


class ToGateway(httpx.AsyncBaseTransport):
    """Real HTTP, with requests to the gateway's public host sent to where it serves.

    A fake service (a Bitrix24 portal, a provider's webhooks) calls the gateway by its
    `public_url`, as the real one would; this sends those calls to the loopback address the
    test's gateway serves on (`target`, set once it serves), and everything else on as is.
    """

    def __init__(self, public_host: str = "gw.example.com", target: str | None = None) -> None:
        self.public_host = public_host
        self.target: httpx.URL | None = httpx.URL(target) if target else None
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.public_host:
            assert self.target is not None, "the gateway is not serving yet"
            request.url = request.url.copy_with(
                scheme=self.target.scheme, host=self.target.host, port=self.target.port
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
