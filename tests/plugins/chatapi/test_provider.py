"""`ChatApiChannel` inside an in-process gateway, talking to the fake Chat API over ASGI."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gateway_chatapi.config import parse_config
from gateway_chatapi.pacing import Pacer
from gateway_chatapi.provider import CURSOR_KEY, ChatApiChannel
from gateway_fakes.chatapi import FakeChatApi, Magic, magic_phone

from gateway.errors import AmbiguousError, ConfigError, PermanentError, TemporaryError
from gateway.models import AccountStatus, Attachment, Delete, Location, Message, Sender
from gateway.providers import Outgoing, Route, Sent
from gateway.testing import GatewayHarness, Recorder, running_gateway

pytestmark = pytest.mark.anyio

SECRET = "wh-secret-0123456789abcdef"
CHAT = "79001234567@c.us"
ROUTE = Route("main", "wa", "crm")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(tmp_path: Path, fake: FakeChatApi, **channel: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 3, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": 2},
        "channels": {
            "wa": {
                "provider": "chatapi",
                "base_url": fake.base_url,
                "token": fake.token,
                "webhook_secret": SECRET,
                "messages_per_second": 0,
                **channel,
            }
        },
        "crms": {
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "crm-token",
                "max_batch": 10,
            }
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


Started = Callable[..., Any]


@pytest.fixture
def fake() -> FakeChatApi:
    return FakeChatApi()


@pytest.fixture
def crm() -> Recorder:
    return Recorder(name="crm")


@pytest.fixture
def started(tmp_path: Path, fake: FakeChatApi, crm: Recorder) -> Started:
    """`async with started(**channel_settings) as h:` a gateway the fake posts webhooks to."""

    @asynccontextmanager
    async def run(**channel: Any) -> AsyncIterator[GatewayHarness]:
        apps = {"api.chat-api.test": fake.app, "crm.test": crm.app}
        async with running_gateway(make_settings(tmp_path, fake, **channel), apps=apps) as h:
            fake.http = h.client
            provider = channel_of(h)
            if provider.startup_task is not None:
                await provider.startup_task
            yield h

    return run


def channel_of(h: GatewayHarness) -> ChatApiChannel:
    provider = h.gateway.instances["wa"]
    assert isinstance(provider, ChatApiChannel)
    return provider


def outgoing(
    job_id: int = 1, attempt: int = 1, quoted: str | None = None, **fields: Any
) -> Outgoing:
    fields.setdefault("conversation_id", CHAT)
    message = Message(native_id=f"op-{job_id}", sender=Sender("anna", "Anna"), **fields)
    return Outgoing(job_id, ROUTE, "crm", message, quoted_target_id=quoted, attempt=attempt)


# start --------------------------------------------------------------------------------


async def test_start_points_the_webhook_at_the_gateway(started: Started, fake: FakeChatApi) -> None:
    async with started():
        pass
    assert fake.settings.webhookUrl == f"http://gateway.test/webhooks/wa/{SECRET}"
    assert fake.settings.ackNotificationsOn
    assert fake.settings.guaranteedHooks
    assert fake.settings.statusNotificationsOn
    assert not fake.settings.ignoreOldMessages
    (call,) = [c for c in fake.calls if c.method == "settings"]
    assert call.http_method == "POST"
    assert "token" not in call.params


async def test_set_webhook_false_leaves_the_instance_alone(
    started: Started, fake: FakeChatApi
) -> None:
    async with started(set_webhook=False, refill_on_start=False):
        pass
    assert fake.settings.webhookUrl == ""
    assert fake.calls == []


async def test_a_refused_token_shows_in_readiness(started: Started) -> None:
    async with started(token="not-the-token") as h:
        ready = (await h.client.get("/readyz")).json()
    assert not ready["ready"]
    assert any("wa:" in p and "unauthorized" in p for p in ready["problems"])
    assert not any("not-the-token" in p for p in ready["problems"])


async def test_a_temporary_failure_at_start_is_retried_in_the_background(
    started: Started, fake: FakeChatApi
) -> None:
    fake.faults.fail_next("settings", kind="unavailable")
    async with started(refill_on_start=False) as h:
        assert h.gateway.problems == []
    assert fake.settings.webhookUrl.endswith(SECRET)
    assert [c.status for c in fake.calls if c.method == "settings"] == [503, 200]


def test_settings_are_checked() -> None:
    _, problems = parse_config(
        {
            "base_url": "ftp://x",
            "token": "t",
            "webhook_secret": "short",
            "groups": "maybe",
            "messages_per_second": -1,
        }
    )
    assert {key for key, _, _ in problems} == {
        "base_url",
        "webhook_secret",
        "groups",
        "messages_per_second",
    }
    config, problems = parse_config(
        {
            "base_url": "https://eu21.chat-api.com/instance1101/",
            "token": "t",
            "webhook_secret": "x" * 16,
            "groups": "true",
        }
    )
    assert problems == []
    assert config is not None
    assert (config.instance_id, config.groups, config.base_url) == (
        "1101",
        True,
        "https://eu21.chat-api.com/instance1101",
    )


async def test_bad_settings_stop_the_gateway_from_building(
    tmp_path: Path, fake: FakeChatApi
) -> None:
    settings = make_settings(tmp_path, fake, webhook_secret="short")
    with pytest.raises(ConfigError) as caught:
        async with running_gateway(settings):
            pass
    assert "channels.wa.webhook_secret" in str(caught.value)


# webhooks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/webhooks/wa", 401),
        ("/webhooks/wa/", 401),
        ("/webhooks/wa/wrong-secret-0123456789", 403),
        (f"/webhooks/wa/{SECRET}x", 403),
    ],
)
async def test_webhooks_without_the_secret_are_refused(
    started: Started, fake: FakeChatApi, crm: Recorder, path: str, status: int
) -> None:
    fake.customer_writes(CHAT, "forged")
    body = fake.pending_webhooks[0]
    async with started(refill_on_start=False) as h:
        response = await h.client.post(path, json=body)
        assert response.status_code == status
        stats = await h.gateway.store.stats(h.gateway.clock())
    assert all(s.ready == 0 for s in stats)
    assert SECRET not in response.text


async def test_a_batch_becomes_one_event_per_item(
    started: Started, fake: FakeChatApi, crm: Recorder
) -> None:
    async with started(refill_on_start=False) as h:
        ids = [fake.customer_writes(CHAT, f"m{i}") for i in range(3)]
        report = await fake.deliver_webhooks()
        assert len(report.attempts) == 1  # one POST with three items
        await crm.wait_count(3)
        accepted = h.observer.of_type("accepted")
    assert crm.texts() == ["m0", "m1", "m2"]
    assert [o.message_id for o in accepted] == ids
    assert crm.received[0].conversation == CHAT


async def test_a_webhook_of_another_instance_is_refused(
    started: Started, fake: FakeChatApi
) -> None:
    fake.customer_writes(CHAT, "misrouted")
    body = {**fake.pending_webhooks[0], "instanceId": "2202"}
    async with started(refill_on_start=False) as h:
        response = await h.client.post(f"/webhooks/wa/{SECRET}", json=body)
    assert response.status_code == 422
    assert "2202" in response.json()["error"]["message"]


async def test_bad_bodies_and_bad_items(started: Started, fake: FakeChatApi, crm: Recorder) -> None:
    async with started(refill_on_start=False) as h:
        url = f"/webhooks/wa/{SECRET}"
        assert (await h.client.post(url, content=b"{nope")).status_code == 400
        assert (await h.client.post(url, json=["x"])).status_code == 400
        assert (await h.client.post(url, json={"messages": {}})).status_code == 422
        # A broken item is skipped; its neighbours still count.
        good = {"id": "false_79001234567@c.us_AAA", "chatId": CHAT, "type": "chat", "body": "ok"}
        response = await h.client.post(url, json={"messages": [{"body": "no id"}, good]})
        assert response.json() == {"ok": True, "accepted": 1, "duplicates": 0}
        # Other notifications (chatUpdate) are answered 200 so they are not resent.
        response = await h.client.post(url, json={"instanceId": "1101", "chatUpdate": []})
        assert response.status_code == 200
        await crm.wait_count(1)


async def test_own_echoes_dropped_phone_messages_mirrored(
    started: Started, fake: FakeChatApi, crm: Recorder
) -> None:
    async with started(refill_on_start=False, mirror_phone_messages=True) as h:
        outcome = (await channel_of(h).send([outgoing(text="from the CRM")]))[0]
        assert isinstance(outcome, Sent)
        fake.phone_writes(CHAT, "typed on the phone")
        await fake.deliver_webhooks()
        await crm.wait_count(1)
        messages = [o for o in h.observer.of_type("accepted") if o.detail["kind"] == "message"]
    assert outcome.native_id not in [o.message_id for o in messages]
    assert len(messages) == 1
    assert crm.texts() == ["typed on the phone"]
    assert crm.received[0].item["note"] is True and crm.received[0].item["from_me"] is True


async def test_phone_messages_are_not_mirrored_by_default(
    started: Started, fake: FakeChatApi, crm: Recorder
) -> None:
    async with started(refill_on_start=False) as h:
        fake.phone_writes(CHAT, "typed on the phone")
        fake.customer_writes(CHAT, "customer")
        await fake.deliver_webhooks()
        await crm.wait_count(1)
        assert len(h.observer.of_type("accepted")) == 1
    assert crm.texts() == ["customer"]


async def test_statuses_and_account_webhooks(started: Started, fake: FakeChatApi) -> None:
    async with started(refill_on_start=False) as h:
        outcome = (await channel_of(h).send([outgoing(text="hi")]))[0]
        assert isinstance(outcome, Sent)
        fake.mark_delivered(outcome.native_id)
        fake.set_state("got qr code")
        await fake.deliver_webhooks()
        await h.observer.wait_for("account_state")
        keys = [o.detail for o in h.observer.of_type("account_state")]
        state = await h.gateway.account_state("wa")
    assert keys[-1]["state"] == "needs_qr"
    assert state.status == AccountStatus.NEEDS_QR
    assert state.qr == "data:image/png;base64," + base64.b64encode(fake.qr_png()).decode()


async def test_account_state_follows_status(started: Started, fake: FakeChatApi) -> None:
    async with started(refill_on_start=False) as h:
        provider = channel_of(h)
        assert (await provider.account_state()).status == AccountStatus.CONNECTED
        fake.set_state("authenticated", substatus="phone")
        assert (await provider.account_state()).status == AccountStatus.DISCONNECTED
        fake.set_state("not_paid")
        assert (await provider.account_state()).status == AccountStatus.UNPAID


async def test_rehosted_media_are_served_by_the_gateway(
    started: Started, fake: FakeChatApi, crm: Recorder
) -> None:
    async with started(refill_on_start=False, rehost_media=True) as h:
        msg_id = fake.customer_writes(CHAT, kind="image", caption="receipt", content=b"PNGDATA")
        await fake.deliver_webhooks()
        await crm.wait_count(1)
        (attachment,) = crm.received[0].item["attachments"]
        served = await h.client.get(attachment["url"])
    assert attachment["url"].startswith("http://gateway.test/media/")
    assert served.content == b"PNGDATA"
    assert crm.texts() == ["receipt"]
    assert msg_id.startswith("false_")


# sending ------------------------------------------------------------------------------


async def test_sends_every_kind(started: Started, fake: FakeChatApi) -> None:
    async with started(refill_on_start=False) as h:
        provider = channel_of(h)
        quoted = fake.customer_writes(CHAT, "which colour?")
        photo = Attachment("image", "https://files.example/p/red.jpg")
        items = [
            outgoing(1, text="Red", quoted=quoted),
            outgoing(2, text="this one", attachments=(photo,)),
            outgoing(3, location=Location(55.75, 37.62, name="Shop", address="Tverskaya 1")),
            outgoing(4, conversation_id="+7 900 765-43-21", text="by phone"),
        ]
        outcomes = await provider.send(items)
    assert all(isinstance(o, Sent) for o in outcomes)
    assert [o.native_id for o in outcomes if isinstance(o, Sent)] == [s.id for s in fake.sent]
    text, file, place, phone = fake.sent
    assert (text.method, text.body, text.quoted_msg_id) == ("sendMessage", "Red", quoted)
    assert text.params["chatId"] == CHAT
    assert (file.method, file.caption, file.params["filename"]) == (
        "sendFile",
        "this one",
        "red.jpg",
    )
    assert file.body == photo.url
    assert place.method == "sendLocation"
    assert (place.params["lat"], place.params["lng"]) == (55.75, 37.62)
    assert place.params["address"] == "Shop\nTverskaya 1"
    assert phone.params["phone"] == "79007654321"


async def test_send_failures_become_outcomes(started: Started) -> None:
    async with started(refill_on_start=False) as h:
        provider = channel_of(h)
        items = [
            outgoing(1, conversation_id=magic_phone(Magic.NO_ACCOUNT) + "@c.us", text="x"),
            outgoing(2, conversation_id=magic_phone(Magic.RATE_LIMITED) + "@c.us", text="x"),
            outgoing(
                3, conversation_id=magic_phone(Magic.TIMEOUT_AFTER_EFFECT) + "@c.us", text="x"
            ),
            outgoing(4, conversation_id="nobody", text="x"),
            outgoing(5, text=""),
        ]
        outcomes = await provider.send(items)
        deleted = await provider.send(
            [Outgoing(6, ROUTE, "crm", Delete(CHAT, "op-1"), target_native_id="true_x")]
        )
    refused, limited, unknown, bad_peer, empty = outcomes
    assert isinstance(refused, PermanentError) and "not a WhatsApp user" in refused.text
    assert isinstance(limited, TemporaryError) and limited.retry_after == 1.0
    assert isinstance(unknown, AmbiguousError)
    assert isinstance(bad_peer, PermanentError) and bad_peer.code == "bad_recipient"
    assert isinstance(empty, PermanentError) and empty.code == "empty"
    assert isinstance(deleted[0], PermanentError)


async def test_a_message_in_parts_resumes_where_it_failed(
    started: Started, fake: FakeChatApi
) -> None:
    files = (
        Attachment("document", "https://files.example/a.pdf"),
        Attachment("document", "https://files.example/b.pdf"),
    )
    async with started(refill_on_start=False) as h:
        provider = channel_of(h)
        fake.faults.fail_next("sendFile", kind="server_error")
        (first,) = await provider.send([outgoing(7, text="two files", attachments=files)])
        assert isinstance(first, TemporaryError)
        (second,) = await provider.send(
            [outgoing(7, attempt=2, text="two files", attachments=files)]
        )
        leftover = await h.gateway.store.kv_items("instance:wa", "progress:")
    assert [(s.method, s.body) for s in fake.sent] == [
        ("sendMessage", "two files"),
        ("sendFile", "https://files.example/a.pdf"),
        ("sendFile", "https://files.example/b.pdf"),
    ]
    assert isinstance(second, Sent)
    assert second.native_id == fake.sent[0].id
    assert second.extra == {"parts": [fake.sent[1].id, fake.sent[2].id]}
    assert leftover == []


def test_pacer_spaces_calls_and_refuses_far_slots() -> None:
    now = [100.0]
    pacer = Pacer(2.0, max_wait=1.0, clock=lambda: now[0])
    assert [pacer.book() for _ in range(3)] == [0.0, 0.5, 1.0]
    assert pacer.book() is None
    assert pacer.retry_in() == pytest.approx(0.5)
    now[0] += 10
    assert pacer.book() == 0.0
    assert Pacer(0).book() == 0.0


# refill -------------------------------------------------------------------------------


async def test_first_start_does_not_import_the_history(
    started: Started, fake: FakeChatApi, crm: Recorder
) -> None:
    for i in range(3):
        fake.customer_writes(CHAT, f"old {i}")
    fake.hooks.outbox.clear()  # delivered long ago, to someone else
    async with started() as h:
        cursor = await h.gateway.store.kv_get("instance:wa", CURSOR_KEY)
        assert h.observer.of_type("accepted") == []
    assert cursor == 3
    assert crm.received == []


async def test_concurrent_webhooks_share_cursor_writes(started: Started) -> None:
    async with started() as h:
        provider = channel_of(h)
        state = provider.context.state
        puts: list[Any] = []
        put = state.put

        async def counting_put(key: str, value: Any) -> None:
            puts.append(value)
            await put(key, value)

        state.put = counting_put  # type: ignore[method-assign]
        base = int(await state.get(CURSOR_KEY) or 0)
        numbers = [base + n for n in range(1, 41)]
        await asyncio.gather(*(provider._advance_cursor(n) for n in reversed(numbers)))
        assert await state.get(CURSOR_KEY) == numbers[-1]  # stored when the calls returned
        assert len(puts) < len(numbers) / 4  # queued callers found theirs stored already
        await provider._advance_cursor(numbers[0])  # lower: nothing to store
        assert await state.get(CURSOR_KEY) == numbers[-1]
        assert len(puts) < len(numbers) / 4


async def test_webhooks_store_the_cursor_after_their_answer(started: Started) -> None:
    async with started() as h:
        provider = channel_of(h)
        state = provider.context.state
        puts: list[Any] = []
        put = state.put

        async def counting_put(key: str, value: Any) -> None:
            puts.append(value)
            await put(key, value)

        state.put = counting_put  # type: ignore[method-assign]
        base = int(await state.get(CURSOR_KEY) or 0)
        for n in range(1, 21):  # webhooks in a burst: none waits for the cursor
            provider._cursor_later(base + n)
        provider._cursor_later(base + 3)  # lower: changes nothing
        await provider.stop()  # stores what the webhooks asked for, before the store closes
        assert await state.get(CURSOR_KEY) == base + 20
        assert len(puts) <= 2  # one write for the burst (and at most one more at the stop)
