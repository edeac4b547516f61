"""The Bitrix24 provider inside a running in-process gateway with the fake portal, for tests."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gateway_bitrix24.provider import Bitrix24Provider
from gateway_fakes.bitrix24 import FakePortal
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.testing import GatewayHarness, Recorder, running_gateway

PUBLIC = "https://gw.example.com"
AUTH = {"Authorization": "Bearer wa-token"}


FILE_FAILURES: list[int] = []


async def _file(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "gone.pdf":
        return Response("gone", status_code=404)
    if FILE_FAILURES:
        return Response("busy", status_code=FILE_FAILURES.pop())
    return Response(b"%PDF-1.4 " + name.encode(), media_type="application/pdf")


FILES = Starlette(routes=[Route("/{name}", _file)])


@dataclass
class Setup:
    h: GatewayHarness
    portal: FakePortal
    recorder: Recorder

    @property
    def provider(self) -> Bitrix24Provider:
        provider = self.h.gateway.instances["b24"]
        assert isinstance(provider, Bitrix24Provider)
        return provider

    async def install(self) -> None:
        response = await self.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert "BX24.installFinish()" in response.text, response.text
        self.portal.finish_install()

    async def settings_page(self, line: int = 1) -> str:
        response = await self.portal.open_connector_settings(line=line)
        assert response.status_code == 200, response.text
        return response.text

    async def press(self, page: str, action: str, channel: str = "") -> httpx.Response:
        return await self.h.client.post("/webhooks/b24/placement", data=form(page, action, channel))

    async def link(self, line: int = 1, channel: str = "wa") -> None:
        response = await self.press(await self.settings_page(line), "link", channel)
        assert f"Linked {channel}" in response.text, response.text

    async def customer(self, msg_id: str, text: str, chat: str = "7999", **extra: Any) -> None:
        body = {"messages": [{"id": msg_id, "chat": chat, "from": chat, "text": text, **extra}]}
        response = await self.h.client.post("/webhooks/wa", json=body, headers=AUTH)
        assert response.status_code == 200


def form(page: str, action: str, channel: str = "") -> dict[str, str]:
    for block in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', block))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        if fields.get("action") == action and fields.get("channel") == channel:
            return fields
    raise AssertionError(f"no {action} form for {channel!r}")


@asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    portal: FakePortal | None = None,
    routes: dict[str, Any] | None = None,
    plugins: Sequence[object] = (),
    channels: dict[str, Any] | None = None,
    apps: dict[str, Any] | None = None,
    **b24: Any,
) -> AsyncIterator[Setup]:
    portal = portal or FakePortal(installed=False)
    recorder = Recorder(name="wa")
    settings = {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": "admin-secret"},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 3, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 2},
        "channels": {
            "wa": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "wa-token",
            },
            **(channels or {}),
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                **b24,
            }
        },
        "routes": routes or {},
    }
    apps = {
        **(apps or {}),
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
        "channel.test": recorder.app,
        "files.test": FILES,
    }
    async with running_gateway(settings, apps=apps, plugins=plugins) as h:
        portal.http = h.client  # the portal reaches the gateway app in process
        yield Setup(h, portal, recorder)
