"""The conformance kit itself: the test channel passes it, and providers that break a rule
are caught (the kit is not vacuous)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from starlette.types import ASGIApp

from gateway.hookspecs import hookimpl
from gateway.providers import Outcome, Outgoing, WebhookRequest, WebhookResult
from gateway.testing import GatewayHarness, Recorder
from gateway.testing.conformance import ChannelConformance, ChannelSubject, _started
from gateway.testing.providers import RecordingChannel

pytestmark = pytest.mark.anyio
TOKEN = "kit-test-channel-token-0123"


class TestChannelSubject(ChannelSubject):
    __test__ = False
    provider: ClassVar[str] = "test-channel"
    send_path: ClassVar[str] = r"/send$"
    conversation: ClassVar[str] = "c1"

    def __init__(self, provider: str = "test-channel") -> None:
        self.name = provider
        self.service = Recorder(name="service")
        self.webhooks: httpx.AsyncClient | None = None
        self.count = 0

    def settings(self) -> dict[str, Any]:
        return {"base_url": "http://service.test", "token": TOKEN, "idempotent": False}

    def apps(self) -> dict[str, ASGIApp]:
        return {"service.test": self.service.app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        self.webhooks = webhooks

    async def writes(self, text: str) -> None:
        assert self.webhooks is not None
        self.count += 1
        message = {"id": f"m{self.count}", "chat": "c1", "from": "c1", "text": text}
        await self.webhooks.post(
            "/webhooks/subject",
            json={"messages": [message]},
            headers={"authorization": f"Bearer {TOKEN}"},
        )


class TestRecordingChannelConformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> TestChannelSubject:
        return TestChannelSubject()


class Careless(RecordingChannel):
    """Trusts any caller and logs its own token: two rules broken."""

    name: ClassVar[str] = "careless-channel"

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        headers = {**request.headers, "authorization": f"Bearer {self.config['token']}"}
        return await super().handle_webhook(
            WebhookRequest(request.method, request.subpath, headers, request.query, request.body)
        )

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        logging.getLogger("careless").info("sending with token %s", self.config["token"][::-1])
        return await super().send(batch)


class CarelessSubject(TestChannelSubject):
    provider: ClassVar[str] = "careless-channel"

    def plugins(self) -> list[object]:
        class Plugin:
            @hookimpl
            def register_providers(self, register: Any) -> None:
                register(Careless)

        return [Plugin()]

    def secrets(self) -> set[str]:
        return {TOKEN[::-1]}  # what it logs; the kit must see it unmasked


async def test_the_kit_catches_a_forgery_taken_for_real(tmp_path: Path) -> None:
    async with _started(CarelessSubject(), str(tmp_path)) as run:
        with pytest.raises(AssertionError, match=r", 200\)"):  # answered 200, not 4xx
            await ChannelConformance().test_forged_requests_are_refused_and_store_nothing(run)


async def test_the_kit_catches_a_secret_in_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with _started(CarelessSubject(), str(tmp_path)) as run:
        await run.send("hello")
        assert run.leaks(caplog.text) == [TOKEN[::-1]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
