"""The provider against the fake GREEN-API over ASGI: settings, webhooks, sends, errors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from gateway_fakes.greenapi import ALL_NOTIFICATIONS_ON, FakeGreenApi, Magic, magic_phone
from gateway_greenapi.pacing import Pacer
from gateway_greenapi.provider import NOTIFICATION_SETTINGS, GreenApiProvider

from gateway.errors import (
    AmbiguousError,
    BadRequest,
    ConfigError,
    PermanentError,
    TemporaryError,
    Unauthorized,
)
from gateway.models import (
    AccountStatus,
    Attachment,
    Contact,
    DeliveryStatus,
    Location,
    Message,
    Sender,
    StatusUpdate,
)
from gateway.providers import Outgoing, Route, Sent, StatusNotice, WebhookRequest
from gateway.testing.standalone import RecordingHub, asgi_mounts, standalone_provider

pytestmark = pytest.mark.anyio

TOKEN = "hook-token-0123456789"
CHAT = "79001234567@c.us"
ROUTE = Route(name="main", channel="wa", crm="crm")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
        "state_poll_seconds": 0,
        **options,
    }
    return standalone_provider(GreenApiProvider, http, config)


def fake_mounts(fake: FakeGreenApi) -> dict[str, httpx.AsyncBaseTransport]:
    return asgi_mounts(fake.app, fake.api_url, fake.media_url)


def methods(fake: FakeGreenApi) -> list[str]:
    return [c.method for c in fake.calls]


# -- settings and start ----------------------------------------------------------------


async def test_start_points_a_new_instance_at_the_gateway() -> None:
    fake = FakeGreenApi()  # a new instance: every notification switched off
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as http:
        provider, _ = make(http, fake)
        await provider.start()
        await provider.stop()
        assert methods(fake) == ["getSettings", "setSettings"]
        sent = fake.calls[1].params
        assert sent["webhookUrl"] == "http://gateway.test/webhooks/wa"
        assert sent["webhookUrlToken"] == TOKEN
        for name in (
            "incomingWebhook",
            "outgoingWebhook",
            "outgoingMessageWebhook",
            "outgoingAPIMessageWebhook",
            "stateWebhook",
        ):
            assert fake.settings.on(name), name
        assert fake.settings.webhookUrl == "http://gateway.test/webhooks/wa"

        # setSettings reboots the instance: a restart with nothing to change must not call it.
        again, _ = make(http, fake)
        await again.start()
        await again.stop()
        assert methods(fake) == ["getSettings", "setSettings", "getSettings"]


async def test_polling_mode_clears_the_webhook_url() -> None:
    fake = FakeGreenApi(webhook_url="https://old.example/hook")
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as http:
        provider, _ = make(http, fake, receive="polling", webhook_token="")
        assert provider.wanted_settings()["webhookUrl"] == ""
        assert await provider.configure() is True
        assert fake.settings.webhookUrl == ""
        assert fake.settings.on("incomingWebhook")


async def test_set_webhook_false_leaves_the_instance_alone(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = make(http, fake, set_webhook=False)
    await provider.start()
    await provider.stop()
    assert fake.calls == []


async def test_refused_settings_fail_start_but_polling_still_runs(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    fake.faults.fail_next("getSettings", kind="unauthorized")
    provider, _ = make(http, fake, state_poll_seconds=60)
    with pytest.raises(PermanentError) as caught:
        await provider.start()
    assert caught.value.code == "unauthorized"
    assert fake.api_token not in str(caught.value)
    assert provider._tasks  # the state poll reports what the account does meanwhile
    await provider.stop()
    assert not provider._tasks


def test_bad_settings_are_named() -> None:
    problems = GreenApiProvider.validate_settings(
        {"api_url": "api.green-api.com", "id_instance": "x1", "api_token": "t", "receive": "push"}
    )
    keys = {key for key, _, _ in problems}
    assert keys == {"api_url", "id_instance", "receive"}
    missing = GreenApiProvider.validate_settings({"api_url": "https://a.test", "id_instance": "1"})
    assert [key for key, _, _ in missing] == ["api_token"]
    token = GreenApiProvider.validate_settings(
        {"api_url": "https://a.test", "id_instance": "1", "api_token": "t"}
    )
    assert [key for key, _, _ in token] == ["webhook_token"]
    flags = GreenApiProvider.validate_settings(
        {
            "api_url": "https://a.test",
            "id_instance": 1,
            "api_token": "t",
            "webhook_token": "w",
            "groups": "yes",
            "messages_per_second": "2.5",
            "receive_timeout": 90,
        }
    )
    assert [key for key, _, _ in flags] == ["receive_timeout"]


async def test_bad_settings_refuse_to_build(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    with pytest.raises(ConfigError) as caught:
        make(http, fake, receive="carrier-pigeon")
    assert "channels.wa.receive" in str(caught.value)


async def test_capabilities(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, _ = make(http, fake, groups="true")
    caps = provider.capabilities
    assert (caps.max_batch, caps.quotes, caps.read_receipts, caps.groups) == (1, True, True, True)
    assert not caps.idempotent_sends
    assert set(NOTIFICATION_SETTINGS) >= {"incomingWebhook", "stateWebhook"}


# -- webhooks --------------------------------------------------------------------------


def hook(body: bytes, auth: str | None = None, method: str = "POST") -> WebhookRequest:
    headers = {"authorization": auth} if auth is not None else {}
    return WebhookRequest(method=method, subpath="", headers=headers, query={}, body=body)


def text_body(fake: FakeGreenApi) -> bytes:
    fake.customer_writes(CHAT, "hi")
    return orjson.dumps(fake.pending_webhooks[-1])


@pytest.mark.parametrize("auth", [f"Bearer {TOKEN}", f"bearer  {TOKEN}", TOKEN])
async def test_webhook_token_accepted(
    http: httpx.AsyncClient, fake: FakeGreenApi, auth: str
) -> None:
    provider, _ = make(http, fake)
    result = await provider.handle_webhook(hook(text_body(fake), auth))
    [inbound] = result.events
    assert isinstance(inbound.event, Message) and inbound.event.text == "hi"


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), ("", 401), ("Bearer wrong", 403), (f"Basic {TOKEN}", 403), (TOKEN + "x", 403)],
)
async def test_webhook_token_refused(
    http: httpx.AsyncClient, fake: FakeGreenApi, auth: str | None, status: int
) -> None:
    provider, _ = make(http, fake)
    with pytest.raises(Unauthorized) as caught:
        await provider.handle_webhook(hook(text_body(fake), auth))
    assert caught.value.status == status
    assert TOKEN not in caught.value.message


async def test_instance_without_token_takes_no_webhooks(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = make(http, fake, receive="polling", webhook_token="")
    with pytest.raises(Unauthorized) as caught:
        await provider.handle_webhook(hook(text_body(fake), "Bearer "))
    assert caught.value.status == 403


async def test_webhook_shapes_refused(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, _ = make(http, fake)
    auth = f"Bearer {TOKEN}"
    with pytest.raises(BadRequest) as get:
        await provider.handle_webhook(hook(b"", auth, method="GET"))
    assert get.value.status == 405
    with pytest.raises(BadRequest) as junk:
        await provider.handle_webhook(hook(b"{nope", auth))
    assert junk.value.status == 400
    other = b'{"typeWebhook": "incomingMessageReceived", "instanceData": {"idInstance": 9}}'
    with pytest.raises(BadRequest) as wrong:
        await provider.handle_webhook(hook(other, auth))
    assert wrong.value.status == 422


# -- sending ---------------------------------------------------------------------------


def outgoing(
    chat: str = CHAT, text: str = "hello", *, job_id: int = 1, quoted: str | None = None, **kw: Any
) -> Outgoing:
    event = Message(
        conversation_id=chat, native_id=f"op-{job_id}", sender=Sender("anna"), text=text, **kw
    )
    return Outgoing(job_id=job_id, route=ROUTE, source="crm", event=event, quoted_target_id=quoted)


async def test_send_text_with_quote_to_a_normalized_chat(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = make(http, fake)
    customer = fake.customer_writes(CHAT, "Which size?")
    [outcome] = await provider.send([outgoing("8 900 123-45-67", "M", quoted=customer)])
    assert isinstance(outcome, Sent)
    [sent] = fake.sent
    assert outcome.native_id == sent.id_message and sent.id_message.startswith("BAE5")
    assert outcome.extra == {"chatId": CHAT}
    assert sent.params == {"chatId": CHAT, "message": "M", "quotedMessageId": customer}
    assert sent.quoted_message_id == customer


async def test_send_media_location_and_contact(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, _ = make(http, fake)
    image = Attachment(kind="image", url="https://files.example/p/photo.jpg")
    [with_caption] = await provider.send([outgoing(text="look", attachments=(image,))])
    assert isinstance(with_caption, Sent)
    assert fake.sent[-1].method == "sendFileByUrl"
    assert fake.sent[-1].params["caption"] == "look"
    assert fake.sent[-1].params["fileName"] == "photo.jpg"
    event_kw: dict[str, Any] = {
        "location": Location(55.7, 37.6, name="Shop"),
        "contacts": (Contact("Anna", ("79001112233",)),),
    }
    [outcome] = await provider.send([outgoing(text="", job_id=2, **event_kw)])
    assert isinstance(outcome, Sent)
    assert [s.method for s in fake.sent[-2:]] == ["sendLocation", "sendContact"]
    assert outcome.extra["idMessages"] == [s.id_message for s in fake.sent[-2:]]


async def test_a_retry_resends_only_the_parts_that_did_not_go(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = make(http, fake)
    doc = Attachment(kind="document", url="https://files.example/price.pdf")
    item = outgoing(text="prices", attachments=(doc,), job_id=7)
    fake.faults.fail_next("sendFileByUrl", kind="server_error")
    [first] = await provider.send([item])
    assert isinstance(first, TemporaryError) and not isinstance(first, AmbiguousError)
    assert [s.method for s in fake.sent] == ["sendMessage"]
    [second] = await provider.send([item])
    assert isinstance(second, Sent)
    assert [s.method for s in fake.sent] == ["sendMessage", "sendFileByUrl"]
    assert second.native_id == fake.sent[-1].id_message
    assert second.extra["idMessages"] == [s.id_message for s in fake.sent]
    assert await provider.context.state.items("send:") == []


@pytest.mark.parametrize(
    ("magic", "error", "code"),
    [
        (Magic.RATE_LIMITED, TemporaryError, "429"),
        (Magic.SERVER_ERROR, TemporaryError, "500"),
        (Magic.QUOTA, PermanentError, "quota_exceeded"),
        (Magic.TIMEOUT, AmbiguousError, None),
        (Magic.TIMEOUT_AFTER_EFFECT, AmbiguousError, None),
    ],
)
async def test_send_errors(
    http: httpx.AsyncClient, fake: FakeGreenApi, magic: Magic, error: type, code: str | None
) -> None:
    provider, _ = make(http, fake)
    [outcome] = await provider.send([outgoing(magic_phone(magic))])
    assert type(outcome) is error
    assert outcome.code == code
    assert fake.api_token not in str(outcome)
    if magic is Magic.RATE_LIMITED:
        assert outcome.retry_after == 1.0
    if magic is Magic.QUOTA:
        assert "quota" in outcome.text


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("unauthorized", PermanentError, "unauthorized"),
        ("unavailable", TemporaryError, "503"),
        ("disconnect", AmbiguousError, None),
    ],
)
async def test_send_faults(
    http: httpx.AsyncClient, fake: FakeGreenApi, kind: Any, error: type, code: str | None
) -> None:
    provider, _ = make(http, fake)
    fake.faults.fail_next("sendMessage", kind=kind)
    [outcome] = await provider.send([outgoing()])
    assert type(outcome) is error
    assert outcome.code == code


async def test_unreachable_api_is_a_plain_temporary_error(fake: FakeGreenApi) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        provider, _ = make(http, fake)
        [outcome] = await provider.send([outgoing()])
    assert type(outcome) is TemporaryError
    assert "cannot reach GREEN-API for sendMessage" in str(outcome)


async def test_groups_off_refuses_group_sends(http: httpx.AsyncClient, fake: FakeGreenApi) -> None:
    provider, _ = make(http, fake)
    [outcome] = await provider.send([outgoing("120363025000000001@g.us")])
    assert isinstance(outcome, PermanentError) and outcome.code == "groups_disabled"
    assert fake.calls == []


async def test_pacer_spaces_sends() -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await pacer.wait()
    assert waits == [0.25, 0.25]
    now[0] += 10
    await pacer.wait()
    assert waits == [0.25, 0.25]
    assert Pacer(0).book() == 0.0


async def test_read_status_from_the_crm_marks_the_chat_read(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = make(http, fake)
    customer = fake.customer_writes(CHAT, "hi")
    read = StatusUpdate(native_id=customer, status=DeliveryStatus.READ, conversation_id=CHAT)
    delivered = StatusUpdate(customer, DeliveryStatus.DELIVERED, conversation_id=CHAT)
    outcomes = await provider.apply_status(
        [StatusNotice(1, ROUTE, read), StatusNotice(2, ROUTE, delivered)]
    )
    assert outcomes == [None, None]
    [call] = fake.calls
    assert (call.method, call.params) == ("readChat", {"chatId": CHAT, "idMessage": customer})


async def test_account_state_with_qr() -> None:
    fake = FakeGreenApi(state="notAuthorized")
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as http:
        provider, _ = make(http, fake)
        state = await provider.account_state()
        assert state.status is AccountStatus.NEEDS_QR
        assert state.qr is not None and state.qr.startswith("data:image/png;base64,")
        assert base64.b64decode(state.qr.split(",", 1)[1]).startswith(b"\x89PNG")
        fake.scan_qr()
        state = await provider.account_state()
        assert (state.status, state.qr) == (AccountStatus.CONNECTED, None)
