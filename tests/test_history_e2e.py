"""History on link, end to end over real HTTP: the gateway on uvicorn, the fake portal
posting its settings page, the fake Chat API posting webhooks.

Linking a number with "history: 3 days" brings what Chat API's `/messages` kept of those
days into the open line, oldest first, with their original times; a message the webhook
brings again has no second effect; without the choice (the default) nothing is imported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_chatapi.provider import ChatApiChannel
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.browser import form_fields
from gateway_fakes.chatapi import FakeChatApi

from gateway.testing import GatewayHarness, ToGateway, running_gateway

pytestmark = pytest.mark.anyio

PUBLIC = "https://gw.example.com"
SECRET = "history-webhook-secret-0123"
IVAN = "79001234567@c.us"
OLGA = "79007654321@c.us"
DAY = 86_400.0


class Past:
    """A clock for the fake, set back to write what customers wrote days ago."""

    def __init__(self) -> None:
        self.back = 0.0

    def __call__(self) -> float:
        return time.time() - self.back


@dataclass
class World:
    h: GatewayHarness
    portal: FakePortal
    chatapi: FakeChatApi
    past: Past

    async def link(self, **choice: str) -> str:
        page = await self.portal.open_connector_settings(line=1)
        assert page.status_code == 200, page.text
        fields = {**form_fields(page.text, "link", "wa"), **choice}
        linked = await self.h.client.post("/webhooks/b24/placement", data=fields)
        assert linked.status_code == 200, linked.text
        return linked.text


def settings(tmp_path: Path, portal: FakePortal, chatapi: FakeChatApi) -> dict[str, Any]:
    return {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 10, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 4},
        "history": {"messages_per_second": 0, "max_queue": 5},
        "channels": {
            "wa": {
                "provider": "chatapi",
                "base_url": chatapi.base_url,
                "token": chatapi.token,
                "webhook_secret": SECRET,
                "messages_per_second": 0,
            }
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                "connector_id": "whatschat",
            }
        },
    }


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    to_gateway = ToGateway()
    past = Past()
    async with httpx.AsyncClient(transport=to_gateway, timeout=30.0) as http:
        portal = FakePortal(http=http, installed=False)
        chatapi = FakeChatApi(http=http, clock=past)
        apps = {
            "acme.bitrix24.com": portal.app,
            "oauth.bitrix.info": portal.oauth_app,
            "api.chat-api.test": chatapi.app,
        }
        async with running_gateway(
            settings(tmp_path, portal, chatapi), apps=apps, serve_http=True
        ) as h:
            assert h.url is not None
            to_gateway.target = httpx.URL(h.url)
            provider = h.gateway.instances["wa"]
            assert isinstance(provider, ChatApiChannel)
            if provider.startup_task is not None:
                await provider.startup_task
            installed = await portal.install(f"{PUBLIC}/webhooks/b24/install")
            assert installed.status_code == 200, installed.text
            portal.finish_install()
            yield World(h, portal, chatapi, past)


async def until(h: GatewayHarness, predicate: Callable[[], bool]) -> None:
    """Wait for `predicate`, woken by each delivery or acceptance (no polling sleeps)."""
    async with asyncio.timeout(30):
        while not predicate():
            kinds = ("delivered", "accepted", "duplicate", "retried")
            waits = [
                asyncio.ensure_future(h.observer.wait_for(k, len(h.observer.of_type(k)) + 1))
                for k in kinds
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


def write_the_past(w: World) -> dict[str, str]:
    """What two customers wrote over the last days, before the number was linked.

    Nobody received the webhook of the oldest (the number was not linked anywhere); the
    others' webhooks are still on their way (Chat API retries them), and come late.
    """
    said = {}
    for days_ago, chat, text in [
        (5.0, IVAN, "five days ago"),
        (2.5, IVAN, "two days ago"),
        (1.5, OLGA, "olga, yesterday"),
        (1.2, IVAN, "ivan, yesterday"),
        (0.1, IVAN, "this morning"),
    ]:
        w.past.back = days_ago * DAY
        said[text] = w.chatapi.customer_writes(chat, text)
        if days_ago == 5.0:
            w.chatapi.hooks.outbox.clear()
    w.past.back = 0.0
    return said


async def test_linking_with_three_days_of_history(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        said = write_the_past(w)
        page = await w.link(history_days="3")
        assert "Linked wa to this open line." in page
        assert "last 3 days are being imported" in page
        await w.h.gateway.history.wait()
        portal = w.portal
        await until(w.h, lambda: len(portal.messages(line=1)) == 4)
        ivan = portal.messages(line=1, chat_id=IVAN)
        assert [m.text for m in ivan] == ["two days ago", "ivan, yesterday", "this morning"]
        [olga] = portal.messages(line=1, chat_id=OLGA)
        assert olga.text == "olga, yesterday"
        # Each with the time the customer wrote it.
        for message in [*ivan, olga]:
            stored = w.chatapi.find(message.external_ids[0])
            assert stored is not None and message.date == stored.item["time"]
        assert said["five days ago"] not in {m.external_ids[0] for m in portal.messages()}
        asked = [c for c in w.chatapi.calls if c.method == "messages" and "min_time" in c.params]
        assert asked and int(asked[0].params["min_time"]) <= time.time() - 3 * DAY + 60

        # The webhooks of the same messages arrive late: each has no second effect.
        duplicates = len(w.h.observer.of_type("duplicate"))
        report = await w.chatapi.deliver_webhooks()
        assert report.failed == 0
        await until(w.h, lambda: len(w.h.observer.of_type("duplicate")) >= duplicates + 4)
        # A new message after them: once it is in, nothing else came along.
        w.chatapi.customer_writes(IVAN, "and now")
        await w.chatapi.deliver_webhooks()
        await until(w.h, lambda: len(portal.messages(line=1)) == 5)
        assert [m.text for m in portal.messages(line=1, chat_id=IVAN)][-2:] == [
            "this morning",
            "and now",
        ]
        assert await w.h.gateway.store.kv_items("history") == []


async def test_no_history_unless_chosen(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        write_the_past(w)
        page = await w.link()  # the form as the page fills it: [history] days = 0
        assert "Linked wa to this open line." in page
        assert "imported" not in page
        assert await w.h.gateway.store.kv_items("history") == []
        assert not [c for c in w.chatapi.calls if "min_time" in c.params]
        # Only what the webhooks bring arrives.
        await w.chatapi.deliver_webhooks()
        await until(w.h, lambda: len(w.portal.messages(line=1)) == 4)
        texts = [m.text for m in w.portal.messages(line=1)]
        assert "five days ago" not in texts


async def test_the_page_offers_the_choice_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        page = await w.portal.open_connector_settings(line=1)
        assert 'name="history_days"' in page.text
        assert '<option value="0" selected>none</option>' in page.text
        refused = await w.link(history_days="lots")
        assert "Choose from the list how many days of history to import." in refused
        assert await w.h.gateway.routes() == []
