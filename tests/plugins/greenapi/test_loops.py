"""State polling and polling-mode receiving, stepped by hand: no real time passes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from gateway_fakes.greenapi import ALL_NOTIFICATIONS_ON, FakeGreenApi
from gateway_greenapi.loops import QR_REFRESH_SECONDS
from gateway_greenapi.provider import GreenApiProvider

from gateway.models import AccountStatus, Message
from gateway.providers import WebhookRequest
from gateway.testing.standalone import RecordingHub, asgi_mounts, standalone_provider

pytestmark = pytest.mark.anyio

CHAT = "79001234567@c.us"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SteppedSleep:
    """An injected `sleep`: records each request and returns only when the test steps."""

    def __init__(self) -> None:
        self.requests: list[float] = []
        self._gates: list[asyncio.Event] = []
        self._asked = asyncio.Condition()

    async def __call__(self, seconds: float) -> None:
        gate = asyncio.Event()
        self._gates.append(gate)
        async with self._asked:
            self.requests.append(seconds)
            self._asked.notify_all()
        await gate.wait()

    async def asleep(self, count: int) -> list[float]:
        """Wait until the loop asked to sleep `count` times in all."""
        async with asyncio.timeout(5), self._asked:
            await self._asked.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    def step(self) -> None:
        self._gates.pop(0).set()


@pytest.fixture
def fake() -> FakeGreenApi:
    return FakeGreenApi(settings=ALL_NOTIFICATIONS_ON)


@pytest.fixture
async def http(fake: FakeGreenApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as client:
        yield client


def make(
    http: httpx.AsyncClient, fake: FakeGreenApi, **options: Any
) -> tuple[GreenApiProvider, RecordingHub]:
    config = {
        "api_url": fake.api_url,
        "id_instance": fake.id_instance,
        "api_token": fake.api_token,
        "webhook_token": "hook-token-0123456789",
        "set_webhook": False,
        **options,
    }
    return standalone_provider(GreenApiProvider, http, config)


def fake_mounts(fake: FakeGreenApi) -> dict[str, httpx.AsyncBaseTransport]:
    return asgi_mounts(fake.app, fake.api_url, fake.media_url)


# -- state -----------------------------------------------------------------------------


async def test_poll_emits_only_changes(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, hub = make(http, fake)
    watcher = provider.watcher
    first = await watcher.poll_once()
    assert first is not None and first.status is AccountStatus.CONNECTED
    assert await watcher.poll_once() is None
    fake.set_state("yellowCard")
    banned = await watcher.poll_once()
    assert banned is not None and banned.status is AccountStatus.BANNED
    assert banned.detail is not None and "yellowCard" in banned.detail
    fake.set_state("sleepMode")
    await watcher.poll_once()
    assert [s.status for s in hub.states()] == [
        AccountStatus.CONNECTED,
        AccountStatus.BANNED,
        AccountStatus.DISCONNECTED,
    ]
    keys = [e.dedupe_key for e in hub.events]
    assert len(set(keys)) == 3 and all(k.startswith("greenapi:1101000001:state:") for k in keys)


async def test_poll_catches_the_state_the_webhook_never_announced(http: httpx.AsyncClient) -> None:
    # GREEN forum #204: after `blocked`, `notAuthorized` may come without a webhook.
    fake = FakeGreenApi(settings=ALL_NOTIFICATIONS_ON, blocked_bug=True)
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as http:
        provider, hub = make(http, fake)
        watcher = provider.watcher
        fake.set_state("blocked")
        await watcher.poll_once()
        fake.logout()
        announced = [b.get("stateInstance") for b in fake.pending_webhooks]
        assert "notAuthorized" not in announced
        state = await watcher.poll_once()
        assert state is not None and state.status is AccountStatus.NEEDS_QR
        assert state.qr is not None and state.qr.startswith("data:image/png;base64,")
        # The QR code is renewed every 20 s on the fake's clock: a new picture is news.
        assert await watcher.poll_once() is None
        fake.advance(QR_REFRESH_SECONDS)
        renewed = await watcher.poll_once()
        assert renewed is not None and renewed.qr not in (None, state.qr)
        assert watcher.pause() == QR_REFRESH_SECONDS
        fake.scan_qr()
        assert (await watcher.poll_once()).status is AccountStatus.CONNECTED  # type: ignore[union-attr]
        assert watcher.pause() == 60.0
    assert [s.status for s in hub.states()] == [
        AccountStatus.BANNED,
        AccountStatus.NEEDS_QR,
        AccountStatus.NEEDS_QR,
        AccountStatus.CONNECTED,
    ]


async def test_state_from_a_webhook_is_not_repeated_by_the_poll(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = make(http, fake)
    fake.set_state("sleepMode")
    body = fake.pending_webhooks[-1]
    request = WebhookRequest(
        "POST", "", {"authorization": "Bearer hook-token-0123456789"}, {}, orjson.dumps(body)
    )
    [inbound] = (await provider.handle_webhook(request)).events
    assert inbound.event.status is AccountStatus.DISCONNECTED  # type: ignore[union-attr]
    assert await provider.watcher.poll_once() is None
    assert hub.events == []


async def test_refused_token_reads_as_error_at_once_blips_only_when_repeated(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = make(http, fake)
    watcher = provider.watcher
    fake.faults.fail_next("getStateInstance", kind="unauthorized")
    state = await watcher.poll_once()
    assert state is not None and state.status is AccountStatus.ERROR
    assert state.detail is not None and fake.api_token not in state.detail
    assert (await watcher.poll_once()).status is AccountStatus.CONNECTED  # type: ignore[union-attr]
    fake.faults.fail_next("getStateInstance", count=3, kind="unavailable")
    assert await watcher.poll_once() is None
    assert await watcher.poll_once() is None
    error = await watcher.poll_once()
    assert error is not None and error.status is AccountStatus.ERROR
    assert len(hub.states()) == 3


async def test_state_loop_runs_from_start_to_stop(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = make(http, fake, state_poll_seconds=60)
    sleep = SteppedSleep()
    provider.watcher.sleep = sleep
    await provider.start()
    try:
        assert await sleep.asleep(1) == [60.0]
        assert [s.status for s in hub.states()] == [AccountStatus.CONNECTED]
        fake.logout()
        sleep.step()
        assert await sleep.asleep(2) == [60.0, QR_REFRESH_SECONDS]
        assert hub.states()[-1].status is AccountStatus.NEEDS_QR
    finally:
        await provider.stop()
    assert provider._tasks == []
    calls = len(fake.calls)
    await asyncio.sleep(0)
    assert len(fake.calls) == calls


async def test_no_state_loop_when_switched_off(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, _ = make(http, fake, state_poll_seconds=0)
    await provider.start()
    names = [task.get_name() for task in provider._tasks]
    assert not [name for name in names if name.startswith("greenapi-state")]
    await provider.stop()


# -- polling mode ----------------------------------------------------------------------


async def test_receive_commits_then_deletes(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, hub = make(http, fake, receive="polling", webhook_token="")
    receiver = provider.receiver
    first = fake.customer_writes(CHAT, "one")
    fake.customer_writes(CHAT, "two")
    hub.fail_next = RuntimeError("store is down")
    with pytest.raises(RuntimeError):
        await receiver.receive_once()
    # Not committed, so not deleted: GREEN hands out the same notification again.
    assert fake.notifications.items[0].body["idMessage"] == first
    assert "deleteNotification" not in [c.method for c in fake.calls]
    assert await receiver.receive_once() is True
    assert await receiver.receive_once() is True
    assert await receiver.receive_once() is False
    assert [e.event.text for e in hub.events] == ["one", "two"]  # type: ignore[union-attr]
    assert fake.notifications.items == []
    calls = [c.method for c in fake.calls]
    assert calls.count("deleteNotification") == 2
    assert fake.calls[0].params["receiveTimeout"] == "20"


async def test_receive_redelivery_is_harmless_and_junk_does_not_block(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = make(http, fake, receive="polling", webhook_token="")
    receiver = provider.receiver
    id_message = fake.customer_writes(CHAT, "once")
    await receiver.receive_once()
    fake.redeliver(id_message)
    fake.notifications.push({"typeWebhook": "incomingMessageReceived", "instanceData": {}})
    fake.customer_writes(CHAT, "after")
    while await receiver.receive_once():
        pass
    assert [e.event.text for e in hub.events] == ["once", "after"]  # type: ignore[union-attr]
    assert fake.notifications.items == []


async def test_receive_loop_backs_off_and_idles(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = make(
        http, fake, receive="polling", webhook_token="", state_poll_seconds=0, poll_idle_seconds=3
    )
    sleep = SteppedSleep()
    provider.receiver.sleep = sleep
    fake.customer_writes(CHAT, "hello")
    fake.faults.fail_next("receiveNotification", kind="server_error")
    await provider.start()
    try:
        assert await sleep.asleep(1) == [2.0]  # backoff after the 500
        sleep.step()
        assert await sleep.asleep(2) == [2.0, 3.0]  # handled "hello", then an empty queue
        [inbound] = await hub.wait_for(1)
        assert isinstance(inbound.event, Message) and inbound.event.text == "hello"
    finally:
        await provider.stop()
