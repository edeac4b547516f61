"""Scenario 3, provider misbehaviour: every message has one effect, whatever the provider does.

* Cloud API: each webhook posted 2-5 times, old bodies re-posted late and concurrently;
  statuses delivered in reverse order (read before delivered before sent), twice.
* GREEN-API: the gateway refuses the head notification for a while (head-of-line retries),
  then a redelivery of an already answered one.
* Chat API: a `guaranteedHooks` retry of a batch the gateway had already answered.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_chatapi.provider import ChatApiChannel
from gateway_fakes.chatapi import FakeChatApi
from gateway_fakes.greenapi import FakeGreenApi

from gateway.testing import Recorder, running_gateway
from gateway.testing.tally import Tally
from tests.reliability.stack import LINE, in_process, served_stack

pytestmark = pytest.mark.anyio


async def run_cloudapi_misbehaviour(
    tmp: Path, *, conversations: int, rounds: int, seed: int = 3
) -> Tally:
    tally = Tally("misbehaviour-cloudapi")
    rng = random.Random(seed)
    started = time.monotonic()
    async with served_stack(tmp, statuses=False) as stack, in_process(stack) as h:
        wa, portal = stack.whatsapp, stack.portal
        chats = stack.customers(conversations)
        posts = 0
        # Idle connections dropped well before uvicorn's 5 s keep-alive timeout: a re-post
        # on a connection the server is closing at that moment fails with ReadError.
        async with httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=1.0)) as http:

            async def repost(delivery: Any) -> int:
                response = await http.post(
                    delivery.url, content=delivery.body, headers=delivery.headers
                )
                return response.status_code

            for n in range(rounds):
                for i, chat in enumerate(chats):
                    key = f"c{i}/in/{n}"
                    tally.send(key.rsplit("/", 1)[0], key)
                    wa.customer_writes(chat, key)
                # One POST per message, each repeated 2-5 times in all.
                made = await wa.deliver_webhooks(batch=False, duplicate=rng.randint(1, 4))
                assert all(d.ok for d in made)
                for i in range(len(chats)):
                    tally.accept(f"c{i}/in/{n}")
                # Earlier bodies again, late, out of order and all at once.
                old = rng.sample(wa.deliveries, min(len(wa.deliveries), 3 * len(chats)))
                statuses = await asyncio.gather(*(repost(d) for d in old for _ in range(2)))
                assert set(statuses) == {200}
                posts += len(made) + len(statuses)
                if n == 0:
                    await stack.pulse.until(lambda: stack.chats_open(chats), 30)
            # Operators answer; WhatsApp reports sent/delivered/read backwards, twice.
            await asyncio.gather(
                *(stack.operator_writes(tally, i, c, 0) for i, c in enumerate(chats))
            )
            await stack.pulse.until(lambda: len(wa.sent) >= len(chats), 30)
            for message in wa.sent:
                wa.mark_sent(message.id)
                wa.mark_delivered(message.id)
                wa.mark_read(message.id)
            made = await wa.deliver_webhooks(shuffle_statuses=True, duplicate=1)
            assert all(d.ok for d in made)
            await stack.pulse.until(lambda: len(_read_ids(portal)) >= len(chats), 30)
            await stack.pulse.until(lambda: tally.accepted <= stack.arrived(), 30)
        duplicates = len(h.observer.of_type("duplicate"))
        stack.count_arrivals(tally)
        read_ids = _read_ids(portal)
        tally.extra["webhook_posts"] = posts
        tally.extra["duplicates_answered_2xx_ignored"] = duplicates
        tally.extra["read_receipts"] = len(read_ids)
        tally.extra["read_receipts_doubled"] = len(read_ids) - len(set(read_ids))
        operator = [m for m in portal.state.messages if m.author == "operator" and m.line == LINE]
        tally.extra["operator_messages_not_read"] = sum(1 for m in operator if not m.read)
    tally.extra["seconds"] = round(time.monotonic() - started, 1)
    tally.inject("Cloud API webhooks x2-5, old ones re-posted late and concurrently")
    tally.inject("Cloud API statuses reversed (read, delivered, sent) and doubled")
    return tally


def _read_ids(portal: Any) -> list[Any]:
    calls = portal.calls_to("imconnector.send.status.reading")
    return [item["im"]["message_id"] for c in calls for item in c.params["MESSAGES"]]


def _check_cloudapi(tally: Tally) -> None:
    tally.assert_clean()
    assert tally.extra["duplicates_answered_2xx_ignored"] > 0
    assert tally.extra["read_receipts_doubled"] == 0
    assert tally.extra["operator_messages_not_read"] == 0, tally.summary()


async def test_cloudapi_duplicates_and_reversed_statuses_short(tmp_path: Path) -> None:
    tally = await run_cloudapi_misbehaviour(tmp_path, conversations=3, rounds=3)
    print(tally.summary())
    _check_cloudapi(tally)


@pytest.mark.chaos
@pytest.mark.parametrize("rounds", [25])
async def test_cloudapi_misbehaviour_chaos(tmp_path: Path, rounds: int) -> None:
    tally = await run_cloudapi_misbehaviour(tmp_path, conversations=20, rounds=rounds)
    print(tally.write(), tally.summary())
    _check_cloudapi(tally)


def _channel_settings(tmp: Path, channel: dict[str, Any]) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp / 'gw.db'}"},
        "media": {"directory": str(tmp / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 2},
        "channels": {"wa": channel},
        "crms": {
            "crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "crm-token"}
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def _tally_recorder(tally: Tally, crm: Recorder) -> None:
    for received in crm.received:
        tally.deliver(received.conversation or "?", received.text)


async def run_greenapi_head_of_line(tmp: Path, *, messages: int) -> Tally:
    tally = Tally("misbehaviour-greenapi")
    crm = Recorder(name="crm", dedupe=False)  # a second effect would show as a duplicate
    token = "green-hook-token-0123456789"
    channel = {
        "provider": "greenapi",
        "api_url": "https://api.green-api.test",
        "id_instance": "1101000001",
        "api_token": "fake0green0api0token",
        "webhook_token": token,
    }
    async with httpx.AsyncClient() as http:
        fake = FakeGreenApi(http=http)
        apps = {"api.green-api.test": fake.app, "crm.test": crm.app}
        settings = _channel_settings(tmp, channel)
        async with running_gateway(settings, apps=apps, serve_http=True) as h:
            fake.settings.webhookUrl = f"{h.url}/webhooks/wa"
            customer = "79001234567"
            ids = []
            for n in range(messages):
                text = f"g/{n}"
                tally.send("g", text)
                ids.append(fake.customer_writes(customer, text))
            # The gateway refuses (a token it does not know): GREEN-API keeps the head.
            fake.settings.webhookUrlToken = "not-the-token-0000000000"
            refused = await fake.deliver_webhooks()
            refused = refused.merge(await fake.deliver_until_idle(max_rounds=3))
            assert refused.failed >= 3 and len(crm.received) == 0
            fake.settings.webhookUrlToken = token
            report = await fake.deliver_until_idle(max_rounds=messages + 5)
            assert report.pending == 0
            for n in range(messages):
                tally.accept(f"g/{n}")
            # Redeliveries of answered notifications (GREEN-API does that after a restart).
            for n in range(0, messages, 3):
                fake.redeliver(ids[n])
            await fake.deliver_until_idle()
            await crm.wait_count(messages)
            await h.observer.wait_for("duplicate", len(range(0, messages, 3)))
            tally.extra["refused_attempts"] = refused.failed
            tally.extra["redelivered"] = len(range(0, messages, 3))
            _tally_recorder(tally, crm)
    tally.inject("GREEN-API head-of-line retries while refused, then redeliveries")
    return tally


async def test_greenapi_head_of_line_short(tmp_path: Path) -> None:
    tally = await run_greenapi_head_of_line(tmp_path, messages=10)
    print(tally.summary())
    tally.assert_clean()
    assert tally.summary()["delivered"] == 10


async def run_chatapi_guaranteed_hooks(tmp: Path, *, messages: int) -> Tally:
    tally = Tally("misbehaviour-chatapi")
    crm = Recorder(name="crm", dedupe=False)
    secret = "reliability-webhook-secret-4f9a1c"
    async with httpx.AsyncClient() as http:
        fake = FakeChatApi(http=http)
        fake.settings.guaranteedHooks = True
        channel = {
            "provider": "chatapi",
            "base_url": fake.base_url,
            "token": fake.token,
            "webhook_secret": secret,
            "messages_per_second": 50,
        }
        apps = {"api.chat-api.test": fake.app, "crm.test": crm.app}
        async with running_gateway(
            _channel_settings(tmp, channel), apps=apps, serve_http=True
        ) as h:
            provider = h.gateway.instances["wa"]
            assert isinstance(provider, ChatApiChannel)
            if provider.startup_task is not None:
                await provider.startup_task
            assert h.url is not None
            fake.settings.webhookUrl = fake.settings.webhookUrl.replace(
                "http://gateway.test", h.url
            )
            ids = []
            for n in range(messages):
                text = f"x/{n}"
                tally.send("x", text)
                ids.append(fake.customer_writes("79001234567@c.us", text))
            report = await fake.deliver_webhooks()
            assert all(a.ok for a in report.attempts)
            for n in range(messages):
                tally.accept(f"x/{n}")
            # guaranteedHooks resends batches the gateway already answered 200.
            for msg_id in ids[::2]:
                fake.redeliver(msg_id)
            again = await fake.deliver_webhooks()
            assert all(a.ok for a in again.attempts)
            await crm.wait_count(messages)
            await h.observer.wait_for("duplicate", 1)
            tally.extra["resent_batches"] = len(again.attempts)
            _tally_recorder(tally, crm)
    tally.inject("Chat API guaranteedHooks resend after a 200")
    return tally


async def test_chatapi_guaranteed_hooks_short(tmp_path: Path) -> None:
    tally = await run_chatapi_guaranteed_hooks(tmp_path, messages=10)
    print(tally.summary())
    tally.assert_clean()
    assert tally.summary()["delivered"] == 10
