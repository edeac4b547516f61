"""Bitrix24 Open Lines against the conformance kit (gateway.testing.conformance)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness
from gateway.testing.conformance import CRMConformance, CRMSubject, WebhookCall

CUSTOMER = "79991234567"
PUBLIC = "https://gw.example.com"


class Bitrix24Subject(CRMSubject):
    provider: ClassVar[str] = "bitrix24"
    public_url: ClassVar[str] = PUBLIC
    send_path: ClassVar[str] = r"imconnector\.send\.messages"
    media_paths: ClassVar[tuple[str, ...]] = ("/disk/", "/bitrix/", "/_fake/")
    conversation: ClassVar[str] = CUSTOMER

    def __init__(self) -> None:
        self.portal = FakePortal(installed=False, rate=None)

    def settings(self) -> dict[str, Any]:
        return {
            "client_id": self.portal.client_id,
            "client_secret": self.portal.client_secret,
            "connector_id": "whatschat",
            "connector_name": "WhatsApp (conformance)",
        }

    def apps(self) -> dict[str, ASGIApp]:
        return {self.portal.domain: self.portal.app, "oauth.bitrix.info": self.portal.oauth_app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        self.portal.http = webhooks
        self.harness = harness
        installed = await self.portal.install(f"{PUBLIC}/webhooks/subject/install")
        assert installed.status_code == 200, installed.text
        self.portal.finish_install()
        # The route is in the settings (`target`); the line still gets the connector
        # switched on from its settings page, as an administrator would.
        page = await self.portal.open_connector_settings(line=1)
        assert page.status_code == 200, page.text
        # A customer wrote first: the open line has the chat operators answer in.
        await harness.client.post(
            "/webhooks/peer",
            json={"messages": [{"id": "c1", "chat": CUSTOMER, "text": "hello"}]},
            headers={"authorization": "Bearer conformance-peer-token"},
        )
        await harness.observer.wait_for("delivered")
        await self.portal.flush()

    @property
    def target(self) -> str:  # type: ignore[override]
        return f"{self.portal.member_id}/1"

    async def writes(self, text: str) -> None:
        await self.portal.operator_writes(1, CUSTOMER, text)

    async def sends_file(self) -> bool:
        spec = {"name": "offer.pdf", "content": b"%PDF-1.4", "mime": "application/pdf"}
        await self.portal.operator_writes(1, CUSTOMER, "the offer", files=[spec])
        return True

    async def deliver_webhooks(self) -> None:
        await self.portal.flush()

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        code = {429: "QUERY_LIMIT_EXCEEDED", 500: "INTERNAL_SERVER_ERROR"}.get(status, "ERROR")
        body = httpx.Response(status, json={"error": code, "error_description": text}).content
        return body, {"content-type": "application/json"}

    def forgeries(self, call: WebhookCall) -> list[WebhookCall]:
        # Events prove themselves by the application token inside the form body.
        token = self.portal.application_token.encode()
        wrong = call.body.replace(token, b"0" * len(token))
        return [*super().forgeries(call), dataclasses.replace(call, body=wrong)]

    def secrets(self) -> set[str]:
        return {self.portal.application_token, self.portal.client_secret}


class TestBitrix24Conformance(CRMConformance):
    @pytest.fixture
    def subject(self) -> Bitrix24Subject:
        return Bitrix24Subject()
