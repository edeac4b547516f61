"""The Cloud API against the conformance kit (gateway.testing.conformance)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import httpx
import pytest
from gateway_fakes.cloudapi import FakeClock, FakeCloudApi, signature
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness
from gateway.testing.conformance import ChannelConformance, ChannelSubject, WebhookCall

CUSTOMER = "16505551234"


class CloudApiSubject(ChannelSubject):
    provider: ClassVar[str] = "cloudapi"
    send_path: ClassVar[str] = r"/messages$"
    media_paths: ClassVar[tuple[str, ...]] = ("/whatsapp_business/attachments",)
    conversation: ClassVar[str] = CUSTOMER

    def __init__(self) -> None:
        self.fake = FakeCloudApi(
            clock=FakeClock(time.time()),
            access_token="EAAGconformance0access0token0000",
            app_secret="conformance-app-secret",
        )
        self.fake.pair_interval = None

    def settings(self) -> dict[str, Any]:
        return {
            "phone_number_id": self.fake.phone_number_id,
            "access_token": self.fake.access_token,
            "app_secret": self.fake.app_secret,
            "verify_token": "conformance-verify-token",
            "pair_interval": 0,
        }

    def apps(self) -> dict[str, ASGIApp]:
        return {"graph.facebook.com": self.fake.app, "lookaside.fbsbx.com": self.fake.app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        harness.gateway.instances["subject"].clock = self.fake.clock  # type: ignore[attr-defined]
        self.fake.http = webhooks
        self.fake.callback_url = "http://gateway.test/webhooks/subject"
        await self.writes("hello")  # opens the 24-hour window for sends

    async def writes(self, text: str) -> None:
        self.fake.customer_writes(CUSTOMER, text)
        await self.fake.deliver_webhooks()

    async def sends_file(self) -> bool:
        self.fake.customer_writes(CUSTOMER, kind="image", media=b"\x89PNG", mime_type="image/png")
        await self.fake.deliver_webhooks()
        return True

    async def deliver_webhooks(self) -> None:
        await self.fake.deliver_webhooks()

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        code = {429: 130429, 500: 131000, 503: 131016}.get(status, 100)
        error = {"message": text, "type": "OAuthException", "code": code, "fbtrace_id": "Afake"}
        error["error_data"] = {"messaging_product": "whatsapp", "details": text}
        body = httpx.Response(status, json={"error": error}).content
        return body, {"content-type": "application/json"}

    def sign(self, call: WebhookCall) -> WebhookCall:
        headers = {
            **call.headers,
            "x-hub-signature-256": signature(self.fake.app_secret, call.body),
        }
        return dataclasses.replace(call, headers=headers)


class TestCloudApiConformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> CloudApiSubject:
        return CloudApiSubject()
