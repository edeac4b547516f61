"""`mirror_phone_messages`: an echo of a send made by another process (the delivery process
of `[workers] delivery_process`) is told from a message typed on the phone through the store.

The gateway here delivers in-process, as `gateway run` with one process does; the send of
"another process" is a job this test claims in the shared store itself, an hour ahead, so
the gateway's own delivery never takes it, and finishes with its id map row as the delivery
process would.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gateway_chatapi import provider as chatapi
from gateway_fakes.chatapi import FakeChatApi

from gateway.hub import GatewayHub
from gateway.store.base import Finished, IdMapping, NewJob
from gateway.testing import GatewayHarness, Recorder, running_gateway
from tests.plugins.chatapi.test_provider import CHAT, SECRET, make_settings

pytestmark = pytest.mark.anyio

URL = f"/webhooks/wa/{SECRET}"
OTHER = "delivery-process"
AHEAD = time.time() + 3600


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def crm() -> Recorder:
    return Recorder(name="crm")


@pytest.fixture
async def h(tmp_path: Path, crm: Recorder) -> AsyncIterator[GatewayHarness]:
    fake = FakeChatApi()
    settings = make_settings(tmp_path, fake, refill_on_start=False, mirror_phone_messages=True)
    apps = {"api.chat-api.test": fake.app, "crm.test": crm.app}
    async with running_gateway(settings, apps=apps) as harness:
        yield harness


class Asked:
    """`Hub.sends_in_flight` of the gateway, recording its answers and waking a waiter."""

    def __init__(self, hub: GatewayHub, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: list[bool] = []
        self.event = anyio.Event()
        self._real = hub.sends_in_flight
        monkeypatch.setattr(hub, "sends_in_flight", self)

    async def __call__(self, instance: str) -> bool:
        answer = await self._real(instance)
        self.answers.append(answer)
        self.event.set()
        return answer


def from_me(message_id: str, text: str) -> dict[str, Any]:
    item = {"id": message_id, "chatId": CHAT, "type": "chat", "body": text, "fromMe": True}
    return {"instanceId": "1101", "messages": [item]}


async def send_in_flight_elsewhere(h: GatewayHarness) -> int:
    """A send job of channel `wa` that another process claimed and has not recorded yet."""
    store = h.gateway.store
    [job_id] = await store.enqueue([NewJob("send", "main", "crm", "wa", "main|wa|x", {})], AHEAD)
    [claimed] = await store.claim("wa", OTHER, 1, 30.0, AHEAD)
    assert claimed.id == job_id
    return job_id


def accepted_messages(h: GatewayHarness) -> list[str | None]:
    return [o.message_id for o in h.observer.of_type("accepted") if o.detail["kind"] == "message"]


async def test_an_echo_of_another_process_send_waits_for_its_record(
    h: GatewayHarness, crm: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await send_in_flight_elsewhere(h)
    asked = Asked(h.gateway.hub, monkeypatch)
    echo = "true_79001234567@c.us_SENTBYTHEDELIVERYPROCESS"
    answered: list[httpx.Response] = []

    async def post() -> None:
        answered.append(await h.client.post(URL, json=from_me(echo, "from the CRM")))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(post)
            # The webhook found no id and saw the send in flight: now it is recorded.
            await asked.event.wait()
            mapped = IdMapping("main", "crm", "op-1", "wa", echo, CHAT)
            await h.gateway.store.finish([Finished(job_id, [mapped])], OTHER, AHEAD)
    assert answered[0].status_code == 200
    assert asked.answers[0] is True
    # Not mirrored: a phone message after it is the only note the CRM gets.
    typed = "true_79001234567@c.us_TYPEDONTHEPHONE"
    assert (await h.client.post(URL, json=from_me(typed, "typed"))).status_code == 200
    await crm.wait_count(1)
    assert accepted_messages(h) == [typed]
    assert crm.texts() == ["typed"]


async def test_a_phone_message_is_mirrored_at_once_when_nothing_is_in_flight(
    h: GatewayHarness, crm: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = Asked(h.gateway.hub, monkeypatch)
    typed = "true_79001234567@c.us_TYPEDONTHEPHONE"
    assert (await h.client.post(URL, json=from_me(typed, "typed"))).status_code == 200
    # Asked once, answered "nothing in flight": no polling of the id map.
    assert asked.answers == [False]
    await crm.wait_count(1)
    assert accepted_messages(h) == [typed]
    assert crm.received[0].item["note"] is True and crm.received[0].item["from_me"] is True


async def test_a_send_in_flight_holds_a_phone_message_no_longer_than_echo_wait(
    h: GatewayHarness, crm: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await send_in_flight_elsewhere(h)  # never recorded: not this message's send
    monkeypatch.setattr(chatapi, "ECHO_WAIT_SECONDS", 0.0)
    asked = Asked(h.gateway.hub, monkeypatch)
    typed = "true_79001234567@c.us_TYPEDWHILESENDING"
    assert (await h.client.post(URL, json=from_me(typed, "typed"))).status_code == 200
    assert asked.answers == [True]
    await crm.wait_count(1)
    assert crm.texts() == ["typed"]
