"""A gateway with one Bitrix24 instance (`b24`) and one test channel (`wa`), in process.

The attack tests of issue 12 (docs/reliability.md, "Security review") drive it: the fake
portal plays Bitrix24 and its OAuth server, the gateway's client reaches it in process.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal

from gateway.testing import GatewayHarness, Recorder, running_gateway

PUBLIC = "https://gw.example.com"
WA_AUTH = {"Authorization": "Bearer wa-token"}
ADMIN = {"Authorization": "Bearer admin-secret"}


@dataclass
class B24:
    h: GatewayHarness
    portal: FakePortal
    recorder: Recorder

    async def install(self) -> None:
        response = await self.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert "BX24.installFinish()" in response.text, response.text
        self.portal.finish_install()

    async def page(self, line: int = 1, user_id: int = 1) -> httpx.Response:
        options = {"CONNECTOR": "whatschat", "LINE": str(line)}
        return await self.portal.open_placement(
            f"{PUBLIC}/webhooks/b24/placement", "SETTING_CONNECTOR", options, user_id=user_id
        )

    async def post_page(self, fields: dict[str, str]) -> httpx.Response:
        return await self.h.client.post("/webhooks/b24/placement", data=fields)

    async def link(self, line: int = 1, channel: str = "wa") -> None:
        page = await self.page(line)
        response = await self.post_page(form(page.text, "link", channel))
        assert f"Linked {channel}" in response.text, response.text

    async def stored_token(self) -> str | None:
        provider = self.h.gateway.instances["b24"]
        record = await provider.store.get(self.portal.member_id, fresh=True)  # type: ignore[attr-defined]
        return None if record is None else str(record.application_token)

    async def b24_routes(self) -> list[str]:
        return [r.name for r in await self.h.gateway.routes() if r.crm == "b24"]


def form(page: str, action: str, channel: str = "") -> dict[str, str]:
    """The hidden fields of the page's form for `action` (and `channel`)."""
    for block in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', block))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        if fields.get("action") == action and fields.get("channel", "") == channel:
            return fields
    raise AssertionError(f"no {action} form for {channel!r}")


Runner = Callable[..., AbstractAsyncContextManager[B24]]


@pytest.fixture
def b24(tmp_path: Path) -> Runner:
    @asynccontextmanager
    async def run(
        *,
        portal: FakePortal | None = None,
        channels: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        plugins: tuple[object, ...] = (),
        files: Any = None,
        **crm: Any,
    ) -> AsyncIterator[B24]:
        portal = portal or FakePortal(installed=False)
        recorder = Recorder(name="wa")
        settings: dict[str, Any] = {
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
                    **crm,
                }
            },
            **(extra or {}),
        }
        apps = {
            "acme.bitrix24.com": portal.app,
            "oauth.bitrix.info": portal.oauth_app,
            "channel.test": recorder.app,
            **({"files.test": files} if files is not None else {}),
        }
        async with running_gateway(settings, apps=apps, plugins=plugins) as h:
            portal.http = h.client
            yield B24(h, portal, recorder)

    return run
