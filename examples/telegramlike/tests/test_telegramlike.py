"""The example plugin: the conformance kit, and text, photos and documents both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gateway_telegramlike
import httpx
import pytest
from fake_botapi import FakeBotApi
from starlette.types import ASGIApp

from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.conformance import ChannelConformance, ChannelSubject

CUSTOMER = 4242
SETTINGS = {"webhook_secret": "example-webhook-secret-0123"}


class TelegramLikeSubject(ChannelSubject):
    provider: ClassVar[str] = "telegramlike"
    send_path: ClassVar[str] = r"/send(Message|Photo|Document)$"
    media_paths: ClassVar[tuple[str, ...]] = ("/file/",)
    conversation: ClassVar[str] = str(CUSTOMER)

    def __init__(self) -> None:
        self.fake = FakeBotApi()

    def plugins(self) -> list[object]:
        return [gateway_telegramlike]

    def settings(self) -> dict[str, Any]:
        return {"token": self.fake.token, "api_url": self.fake.api_url, **SETTINGS}

    def apps(self) -> dict[str, ASGIApp]:
        return {self.fake.host: self.fake.app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        self.fake.http = webhooks

    async def writes(self, text: str) -> None:
        self.fake.customer_writes(CUSTOMER, text)
        await self.fake.deliver_webhooks()

    async def sends_file(self) -> bool:
        self.fake.customer_writes(CUSTOMER, "look", photo=("cat.jpg", b"\xff\xd8JPEG"))
        await self.fake.deliver_webhooks()
        return True

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        answer = {"ok": False, "error_code": status, "description": text}
        return httpx.Response(status, json=answer).content, {"content-type": "application/json"}


class TestTelegramLikeConformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> TelegramLikeSubject:
        return TelegramLikeSubject()


@pytest.mark.anyio
async def test_text_photos_and_documents_both_ways(tmp_path: Path) -> None:
    fake, crm = FakeBotApi(), Recorder(name="crm")
    channel = {"token": fake.token, "api_url": fake.api_url, **SETTINGS}
    settings = {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path}/gw.db"},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {"tg": {"provider": "telegramlike", **channel}},
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "t"}},
        "routes": {"main": {"channel": "tg", "crm": "crm"}},
    }
    apps = {fake.host: fake.app, "crm.test": crm.app}
    async with running_gateway(settings, apps=apps, plugins=[gateway_telegramlike]) as h:
        # Registered at start: the gateway's webhook URL and the secret it checks.
        assert fake.webhook["url"] == "http://gateway.test/webhooks/tg"
        assert fake.webhook["secret_token"] == SETTINGS["webhook_secret"]
        fake.http = h.client
        fake.customer_writes(CUSTOMER, "hello")
        fake.customer_writes(CUSTOMER, "my cat", photo=("cat.jpg", b"\xff\xd8JPEG"))
        fake.customer_writes(CUSTOMER, "", document=("offer.pdf", b"%PDF-1.4"))
        assert await fake.deliver_webhooks() == [200, 200, 200]
        await crm.wait_count(3)
        hello, cat, offer = crm.received
        assert (hello.text, cat.text) == ("hello", "my cat")
        for received, content in ((cat, b"\xff\xd8JPEG"), (offer, b"%PDF-1.4")):
            [attachment] = received.item["attachments"]
            assert attachment["url"].startswith("http://gateway.test/media/")  # re-hosted
            assert (await h.client.get(attachment["url"])).content == content

        photo = {"kind": "image", "url": "https://files.example/p.jpg"}
        document = {"kind": "document", "url": "https://files.example/d.pdf"}
        operator = [
            {"id": "op1", "chat": str(CUSTOMER), "text": "hi", "quote": cat.native_id},
            {"id": "op2", "chat": str(CUSTOMER), "text": "a photo", "attachments": [photo]},
            {"id": "op3", "chat": str(CUSTOMER), "text": "", "attachments": [document]},
            {"id": "op4", "chat": str(CUSTOMER), "text": "x" * 5000},  # split by the core
        ]
        auth = {"authorization": "Bearer t"}
        response = await h.client.post("/webhooks/crm", json={"messages": operator}, headers=auth)
        assert response.status_code == 200
        await crm.wait_for(lambda r: len(r.acks) == 4)
    methods = [method for method, _ in fake.sent]
    assert methods == ["sendMessage", "sendPhoto", "sendDocument", "sendMessage", "sendMessage"]
    first, photo_sent, document_sent, *pieces = (body for _, body in fake.sent)
    assert first["reply_parameters"] == {"message_id": 2}  # the customer's photo message
    assert (photo_sent["photo"], photo_sent["caption"]) == (photo["url"], "a photo")
    assert document_sent["document"] == document["url"]
    assert [len(p["text"]) for p in pieces] == [4096, 904]
    assert all(ack["error"] is None for ack in crm.acks)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
