"""The details of a conversation, end to end over real HTTP: a real WhatsApp channel's fake
(GREEN-API) posts its webhooks to a served gateway, the gateway delivers into the fake
Bitrix24 portal, and the portal's operator events come back over real HTTP.

Covered: operator quotes becoming WhatsApp quoted replies; customers' profile photos as
their Bitrix24 avatar; group chats, one open-line chat per group with each message naming
its participant; messages typed on the business phone mirrored into the chat, marked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.browser import form_fields
from gateway_fakes.cloudapi import FakeCloudApi
from gateway_fakes.greenapi import FakeGreenApi, Magic, magic_phone

from gateway.testing import GatewayHarness, ToGateway, running_gateway

pytestmark = pytest.mark.anyio

PUBLIC = "https://gw.example.com"
GREEN_HOST = "api.green-api.test"
CUSTOMER = "79001234567"
CHAT = f"{CUSTOMER}@c.us"
CLOUD = {
    "provider": "cloudapi",
    "phone_number_id": "106540352242922",
    "access_token": "EAAGfakeAccessToken0000000000",
    "app_secret": "fake-app-secret",
    "verify_token": "verify-me-please",
    "pair_interval": 0,
}


@dataclass
class World:
    h: GatewayHarness
    portal: FakePortal
    green: FakeGreenApi

    async def until(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        """Wait for `predicate`, woken by each pipeline observation (no polling sleeps)."""
        kinds = ("delivered", "accepted", "retried", "dead_lettered")
        async with asyncio.timeout(within):
            while not predicate():
                observer = self.h.observer
                waits = [
                    asyncio.ensure_future(observer.wait_for(k, len(observer.of_type(k)) + 1, 30))
                    for k in kinds
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()

    async def customer_writes(self, *args: Any, **kwargs: Any) -> str:
        message_id = self.green.customer_writes(*args, **kwargs)
        report = await self.green.deliver_webhooks()
        assert report.failed == 0, report
        return message_id


def settings(tmp_path: Path, portal: FakePortal, cloud: bool, **channel: Any) -> dict[str, Any]:
    green = {
        "provider": "greenapi",
        "api_url": f"https://{GREEN_HOST}",
        "id_instance": "1101000001",
        "api_token": "fake0green0api0token",
        "webhook_token": "green-hook-token-0123456789",
    }
    return {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 5, "jitter": 0.0},
        "workers": {"poll_interval": 0.05},
        "channels": {"wa": {**(CLOUD if cloud else green), **channel}},
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
async def world(
    tmp_path: Path, language: str = "en", cloud: FakeCloudApi | None = None, **channel: Any
) -> AsyncIterator[World]:
    """A linked line; the channel is GREEN-API, or the Cloud API when `cloud` is given."""
    to_gateway = ToGateway()
    async with httpx.AsyncClient(transport=to_gateway, timeout=30.0) as http:
        portal = FakePortal(http=http, installed=False)
        portal.app_record.language_id = language
        green = FakeGreenApi(http=http)
        apps = {
            "acme.bitrix24.com": portal.app,
            "oauth.bitrix.info": portal.oauth_app,
            GREEN_HOST: green.app,
        }
        if cloud is not None:
            cloud.http = http
            apps["graph.facebook.com"] = cloud.app
        config = settings(tmp_path, portal, cloud is not None, **channel)
        async with running_gateway(config, apps=apps, serve_http=True) as h:
            assert h.url is not None
            to_gateway.target = httpx.URL(h.url)
            response = await portal.install(f"{PUBLIC}/webhooks/b24/install")
            assert response.status_code == 200, response.text
            portal.finish_install()
            page = await portal.open_connector_settings(line=1)
            linked = await h.client.post(
                "/webhooks/b24/placement", data=form_fields(page.text, "link", "wa")
            )
            assert linked.status_code == 200, linked.text
            assert [r.channel for r in await h.gateway.routes() if r.crm == "b24"] == ["wa"]
            yield World(h, portal, green)


async def test_an_operator_quote_is_a_whatsapp_quoted_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        portal, green = w.portal, w.green
        size = await w.customer_writes(CUSTOMER, "Do you have it in size 42?", sender_name="Ivan")
        await w.customer_writes(CUSTOMER, "And in blue?", sender_name="Ivan")
        await w.until(lambda: len(portal.messages(chat_id=CHAT)) == 2)
        asked, _ = portal.messages(chat_id=CHAT)

        # The operator quotes the first question: the text carries the quote block only.
        emission = await portal.operator_writes(1, CHAT, "Yes, we do.", quote=asked)
        assert "-" * 54 in emission.data["MESSAGES"][0]["message"]["text"]
        await w.until(lambda: len(green.sent) == 1)
        [reply] = green.sent
        assert reply.params == {
            "chatId": CHAT,
            "message": "*Anna:*\nYes, we do.",
            "quotedMessageId": size,
        }
        message = emission.message
        assert message is not None
        await w.until(lambda: message.delivered)

        # Quoting the operator's own reply quotes it on WhatsApp too.
        again = await portal.operator_writes(1, CHAT, "In every size.", quote=message)
        await w.until(lambda: len(green.sent) == 2)
        assert green.sent[1].params["quotedMessageId"] == reply.id_message
        assert green.sent[1].params["message"] == "*Anna:*\nIn every size."
        assert again.message is not None

        # A quote of something the chat does not hold is kept as quote lines.
        older = dataclasses.replace(asked, text="a message from an older session")
        await portal.operator_writes(1, CHAT, "See above.", quote=older)
        await w.until(lambda: len(green.sent) == 3)
        third = green.sent[2].params
        assert "quotedMessageId" not in third
        assert third["message"] == "*Anna:*\n> a message from an older session\nSee above."


async def test_a_customer_photo_becomes_the_avatar_once(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        portal, green = w.portal, w.green
        green.set_avatar(CUSTOMER)
        await w.customer_writes(CUSTOMER, "Hello", sender_name="Ivan")
        await w.customer_writes(CUSTOMER, "Are you there?", sender_name="Ivan")
        await w.until(lambda: len(portal.messages(chat_id=CHAT)) == 2)
        first, second = portal.messages(chat_id=CHAT)
        # Re-hosted by the gateway (fetched through the guarded fetcher), given once.
        picture = first.user["picture"]["url"]
        assert picture.startswith(f"{PUBLIC}/media/") and "green-api" not in picture
        assert "picture" not in second.user
        assert portal.state.photos == {first.author_id: [picture]}
        assert green.avatar_calls == [CHAT]  # asked once for the chat

        # A photo at an address the guarded fetcher refuses is left out; the message goes.
        other = "79005554433"
        green.avatars[f"{other}@c.us"] = "http://169.254.169.254/latest/meta-data/photo.jpg"
        await w.customer_writes(other, "Hi", sender_name="Olga")
        await w.until(lambda: len(portal.messages(chat_id=f"{other}@c.us")) == 1)
        [hi] = portal.messages(chat_id=f"{other}@c.us")
        assert "picture" not in hi.user and hi.text == "Hi"


async def test_a_group_is_one_chat_and_each_message_names_its_participant(
    tmp_path: Path,
) -> None:
    group = "79001234567-1581234048@g.us"
    async with world(tmp_path, groups=True) as w:
        portal, green = w.portal, w.green
        await w.customer_writes(
            group, "Hi all", sender=CUSTOMER, sender_name="Ivan", chat_name="Family Shop"
        )
        await w.customer_writes(group, "[b]Hello[/b]", sender="79005554433", sender_name="Olga")
        await w.until(lambda: len(portal.messages(chat_id=group)) == 2)
        first, second = portal.messages(chat_id=group)
        assert first.text == "[b]Ivan (+79001234567):[/b]\nHi all"
        # The participant's text stays inert, as any customer's.
        assert second.text == "[b]Olga (+79005554433):[/b]\n[\u200bb]Hello[\u200b/b]"
        # One customer for the whole group: one open-line chat, not one per participant.
        assert first.user == second.user == {"id": group, "name": "Family", "last_name": "Shop"}
        assert first.bitrix_chat_id == second.bitrix_chat_id
        assert len(portal.state.chats) == 1 and not green.avatar_calls

        # The operator's answer goes to the group.
        await portal.operator_writes(1, group, "Welcome!")
        await w.until(lambda: len(green.sent) == 1)
        assert green.sent[0].params == {"chatId": group, "message": "*Anna:*\nWelcome!"}


@pytest.mark.parametrize(
    ("language", "label"),
    [("en", "📱 Sent from the business phone"), ("ru", "📱 Отправлено с рабочего телефона")],
)
async def test_messages_typed_on_the_business_phone_are_mirrored_and_marked(
    tmp_path: Path, language: str, label: str
) -> None:
    async with world(tmp_path, language=language, mirror_phone_messages=True) as w:
        portal, green = w.portal, w.green
        await w.customer_writes(CUSTOMER, "Hello", sender_name="Ivan")
        await w.until(lambda: len(portal.messages(chat_id=CHAT)) == 1)
        green.phone_writes(CUSTOMER, "We open at *9*")
        assert (await green.deliver_webhooks()).failed == 0
        await w.until(lambda: len(portal.messages(chat_id=CHAT)) == 2)
        hello, typed = portal.messages(chat_id=CHAT)
        assert typed.text == f"[i]{label}[/i]\nWe open at [b]9[/b]"
        # In the customer's chat, as the customer's side: never sent back to WhatsApp, and
        # the customer keeps their name (the block is theirs, not the business's).
        assert typed.bitrix_chat_id == hello.bitrix_chat_id and typed.author == "client"
        assert typed.user == hello.user
        assert green.sent == []

        # What the gateway itself sent is not mirrored again (its echo is dropped).
        await portal.operator_writes(1, CHAT, "Thanks")
        await w.until(lambda: len(green.sent) == 1)
        assert (await green.deliver_webhooks()).failed == 0
        await w.until(lambda: len(portal.calls_to("imconnector.send.status.delivery")) == 1)
        assert len(portal.messages(chat_id=CHAT)) == 3  # hello, typed, the operator's


async def test_cloud_api_contact_card_once_and_quote_as_context(tmp_path: Path) -> None:
    cloud = FakeCloudApi(app_secret=CLOUD["app_secret"], callback_url=f"{PUBLIC}/webhooks/wa")
    async with world(tmp_path, cloud=cloud) as w:
        portal = w.portal
        card = cloud.customer_writes(CUSTOMER, "Jane Doe", kind="contacts", name="Ivan")
        asked = cloud.customer_writes(CUSTOMER, "Is it in stock?")
        assert all(d.status == 200 for d in await cloud.deliver_webhooks())
        await w.until(lambda: len(portal.messages(chat_id=CUSTOMER)) == 2)
        shown, question = portal.messages(chat_id=CUSTOMER)
        # The card once, from its structure (Cloud API sends no text with it).
        assert shown.text.count("Jane Doe") == 1 and shown.text.startswith("[b]Contact:[/b]")
        assert "picture" not in shown.user  # the Cloud API gives no profile photo

        await portal.operator_writes(1, CUSTOMER, "Yes.", quote=question)
        await w.until(lambda: len(cloud.sent) == 1)
        [sent] = cloud.sent
        assert sent.request["context"] == {"message_id": asked}
        assert sent.request["text"]["body"] == "*Anna:*\nYes."
        assert card != asked


async def test_the_gateways_notes_keep_the_customers_name(tmp_path: Path) -> None:
    nobody = magic_phone(Magic.NO_ACCOUNT)
    async with world(tmp_path) as w:
        portal, green = w.portal, w.green
        await w.customer_writes(nobody, "Hello", sender_name="Ivan Petrov")
        await w.until(lambda: len(portal.messages(chat_id=f"{nobody}@c.us")) == 1)
        [hello] = portal.messages(chat_id=f"{nobody}@c.us")
        assert portal.state.user_names[hello.author_id] == "Ivan Petrov"

        # WhatsApp reports the reply failed: a note in the chat, on the customer's side.
        await portal.operator_writes(1, f"{nobody}@c.us", "Hi")
        await w.until(lambda: len(green.sent) == 1)
        assert (await green.deliver_webhooks()).failed == 0
        await w.until(lambda: len(portal.messages(chat_id=f"{nobody}@c.us")) == 3)
        note = portal.messages(chat_id=f"{nobody}@c.us")[-1]
        assert note.text.startswith("[b]⚠ Not delivered to WhatsApp[/b]")
        # The same user block as the customer's own: Bitrix24 does not rename them "Guest".
        assert note.user == hello.user
        assert portal.state.user_names[hello.author_id] == "Ivan Petrov"
