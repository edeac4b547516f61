"""Test helpers that go with the fake: a manual clock and an app that records requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .formdata import parse_query, php_form_decode


class ManualClock:
    """A clock that only moves when told to: `FakePortal(clock=clock)`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The form fields exactly as posted, in order."""
        return parse_qsl(self.body.decode(), keep_blank_values=True)

    @property
    def form(self) -> dict[str, Any]:
        """The form rebuilt into nested data, as a PHP/bracket-aware parser sees it."""
        return php_form_decode(self.pairs)

    @property
    def query(self) -> dict[str, Any]:
        return parse_query(urlsplit(self.url).query)


class Recorder:
    """Stands in for the gateway: answers every request with `status`, keeps them all."""

    def __init__(self, status: int = 200, body: str = "OK") -> None:
        self.status = status
        self.body = body
        self.received: list[Received] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Received(request.method, str(request.url), headers, body))
        return Response(self.body, status_code=self.status, media_type="text/plain")

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))
