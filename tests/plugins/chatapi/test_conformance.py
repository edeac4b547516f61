"""Chat API against the conformance kit (gateway.testing.conformance)."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest
from gateway_chatapi.provider import ChatApiChannel
from gateway_fakes.chatapi import FakeChatApi
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness
from gateway.testing.conformance import ChannelConformance, ChannelSubject

CUSTOMER = "79001234567"


class ChatApiSubject(ChannelSubject):
    provider: ClassVar[str] = "chatapi"
    send_path: ClassVar[str] = r"/sendMessage$"
    media_paths: ClassVar[tuple[str, ...]] = ("/_fake/files/",)
    conversation: ClassVar[str] = f"{CUSTOMER}@c.us"

    def __init__(self, **options: Any) -> None:
        self.fake = FakeChatApi(token="chatapi-conformance-token-0042")
        self.options = options

    def settings(self) -> dict[str, Any]:
        return {
            "base_url": self.fake.base_url,
            "token": self.fake.token,
            "webhook_secret": "conformance-webhook-secret-7f3a",
            "messages_per_second": 1000,
            **self.options,
        }

    def apps(self) -> dict[str, ASGIApp]:
        return {httpx.URL(self.fake.base_url).host: self.fake.app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        provider = harness.gateway.instances["subject"]
        assert isinstance(provider, ChatApiChannel)
        if provider.startup_task is not None:
            await provider.startup_task
        self.fake.http = webhooks

    async def writes(self, text: str) -> None:
        self.fake.customer_writes(CUSTOMER, text)
        await self.fake.deliver_webhooks()

    async def sends_file(self) -> bool:
        self.fake.customer_writes(CUSTOMER, kind="image", caption="receipt", content=b"PNGDATA")
        await self.fake.deliver_webhooks()
        return True

    async def deliver_webhooks(self) -> None:
        await self.fake.deliver_webhooks()

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        body = httpx.Response(status, json={"sent": False, "message": text}).content
        return body, {"content-type": "application/json"}


class TestChatApiConformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> ChatApiSubject:
        return ChatApiSubject()


class TestChatApiRehostingConformance(ChannelConformance):
    """With `rehost_media`, inbound files are copied by the core through the fetcher."""

    @pytest.fixture
    def subject(self) -> ChatApiSubject:
        return ChatApiSubject(rehost_media=True)
