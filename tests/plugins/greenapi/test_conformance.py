"""GREEN-API against the conformance kit (gateway.testing.conformance)."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest
from gateway_fakes.greenapi import FakeGreenApi
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness
from gateway.testing.conformance import ChannelConformance, ChannelSubject

CUSTOMER = "79001234567"


class GreenApiSubject(ChannelSubject):
    provider: ClassVar[str] = "greenapi"
    send_path: ClassVar[str] = r"/sendMessage/"
    media_paths: ClassVar[tuple[str, ...]] = ("/_fake/files/",)
    conversation: ClassVar[str] = f"{CUSTOMER}@c.us"

    def __init__(self) -> None:
        self.fake = FakeGreenApi(api_token="green0conformance0token0secret")

    def settings(self) -> dict[str, Any]:
        return {
            "api_url": self.fake.api_url,
            "id_instance": self.fake.id_instance,
            "api_token": self.fake.api_token,
            "webhook_token": "green-hook-token-0123456789",
        }

    def apps(self) -> dict[str, ASGIApp]:
        hosts = {httpx.URL(self.fake.api_url).host, httpx.URL(self.fake.media_url).host}
        return {host: self.fake.app for host in hosts}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        self.fake.http = webhooks

    async def writes(self, text: str) -> None:
        self.fake.customer_writes(CUSTOMER, text)
        await self.fake.deliver_webhooks()

    async def sends_file(self) -> bool:
        self.fake.customer_writes(CUSTOMER, kind="image", caption="receipt")
        await self.fake.deliver_webhooks()
        return True

    async def deliver_webhooks(self) -> None:
        await self.fake.deliver_webhooks()

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        body = httpx.Response(status, json={"message": text, "path": "/x"}).content
        return body, {"content-type": "application/json"}


class TestGreenApiConformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> GreenApiSubject:
        return GreenApiSubject()
