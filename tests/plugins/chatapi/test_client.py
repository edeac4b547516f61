"""Chat API answers mapped to temporary, ambiguous and permanent errors, token-free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_chatapi.client import ChatApiClient, scrub
from gateway_fakes.chatapi import FakeChatApi, Magic, magic_phone

from gateway.errors import AmbiguousError, PermanentError, TemporaryError

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-instance-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeChatApi:
    return FakeChatApi(token=TOKEN)


@pytest.fixture
async def client(fake: FakeChatApi) -> AsyncIterator[ChatApiClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        yield ChatApiClient(http, fake.base_url, TOKEN)


def text(phone: str, body: str = "hi") -> dict[str, Any]:
    return {"phone": phone, "body": body}


async def test_sent_gives_the_id(client: ChatApiClient, fake: FakeChatApi) -> None:
    result = await client.send("sendMessage", {"chatId": "79001234567@c.us", "body": "hello"})
    assert result.id == fake.sent[0].id
    assert result.id is not None and result.id.startswith("true_79001234567@c.us_")
    assert result.queue_number == 1
    call = fake.calls[-1]
    assert call.params == {"chatId": "79001234567@c.us", "body": "hello"}  # token kept apart


@pytest.mark.parametrize(
    ("magic", "words"),
    [
        (Magic.NO_ACCOUNT, "not a WhatsApp user"),
        (Magic.FAILED, "could not be sent"),
    ],
)
async def test_sent_false_is_permanent_with_the_providers_words(
    client: ChatApiClient, magic: Magic, words: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.send("sendMessage", text(magic_phone(magic)))
    assert caught.value.code == "not_sent"
    assert words in caught.value.text


async def test_eight_prefixed_number_is_refused(client: ChatApiClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.send("sendMessage", text("89001234567"))
    assert "7XXXXXXXXXX" in caught.value.text


async def test_rate_limit_is_temporary_with_retry_after(client: ChatApiClient) -> None:
    with pytest.raises(TemporaryError) as caught:
        await client.send("sendMessage", text(magic_phone(Magic.RATE_LIMITED)))
    assert not isinstance(caught.value, AmbiguousError)
    assert caught.value.retry_after == 1.0
    assert caught.value.code == "429"


async def test_server_error_is_temporary(client: ChatApiClient) -> None:
    with pytest.raises(TemporaryError) as caught:
        await client.send("sendMessage", text(magic_phone(Magic.SERVER_ERROR)))
    assert not isinstance(caught.value, AmbiguousError)
    assert "Internal server error" in caught.value.text


@pytest.mark.parametrize("magic", [Magic.TIMEOUT, Magic.TIMEOUT_AFTER_EFFECT])
async def test_read_timeout_on_a_send_is_ambiguous(client: ChatApiClient, magic: Magic) -> None:
    # Once the request has left, a lost answer says nothing about whether it was queued.
    with pytest.raises(AmbiguousError):
        await client.send("sendMessage", text(magic_phone(magic)))


async def test_dropped_connection_on_a_send_is_ambiguous(
    client: ChatApiClient, fake: FakeChatApi
) -> None:
    fake.faults.fail_next("sendMessage", kind="disconnect")
    with pytest.raises(AmbiguousError):
        await client.send("sendMessage", text("79001234567"))


async def test_timeouts_elsewhere_are_only_temporary(
    client: ChatApiClient, fake: FakeChatApi
) -> None:
    fake.faults.fail_next("status", kind="timeout")
    with pytest.raises(TemporaryError) as caught:
        await client.status()
    assert not isinstance(caught.value, AmbiguousError)


async def test_unreachable_host_is_temporary() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = ChatApiClient(http, "https://api.chat-api.test/instance1101", TOKEN)
        with pytest.raises(TemporaryError) as caught:
            await client.send("sendMessage", text("79001234567"))
    assert not isinstance(caught.value, AmbiguousError)
    assert TOKEN not in str(caught.value)


async def test_bad_token_is_permanent_and_never_shown(fake: FakeChatApi) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        client = ChatApiClient(http, fake.base_url, "wrong-token")
        with pytest.raises(PermanentError) as caught:
            await client.send("sendMessage", text("79001234567"))
    assert caught.value.code == "unauthorized"
    assert "Wrong token" in caught.value.text
    assert "wrong-token" not in str(caught.value)


async def test_wrong_instance_is_permanent(fake: FakeChatApi) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http:
        client = ChatApiClient(http, f"{fake.host}/instance999", TOKEN)
        with pytest.raises(PermanentError) as caught:
            await client.status()
    assert caught.value.code == "not_found"
    assert "base_url" in caught.value.text


async def test_bad_request_keeps_the_providers_text(client: ChatApiClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.send("sendMessage", {"chatId": "not-a-chat", "body": "x"})
    assert caught.value.code == "400"
    assert "Wrong chatId" in caught.value.text


async def test_status_qr_and_messages(client: ChatApiClient, fake: FakeChatApi) -> None:
    fake.set_state("got qr code")
    status = await client.status()
    assert status["accountStatus"] == "got qr code"
    png = await client.qr_code()
    assert png.startswith(b"\x89PNG")
    fake.scan_qr()
    with pytest.raises(PermanentError):
        await client.qr_code()  # no QR while authenticated
    fake.customer_writes("79001234567", "one")
    fake.customer_writes("79001234567", "two")
    page = await client.messages(1, 100)
    assert [m["body"] for m in page["messages"]] == ["two"]
    latest = await client.messages(0, 1, last=True)
    assert latest["messages"][0]["messageNumber"] == 2


def test_scrub_hides_tokens_and_shortens() -> None:
    assert scrub("GET /status?token=abc&x=1 failed") == "GET /status?token=***&x=1 failed"
    assert len(scrub("x" * 1000)) < 400
