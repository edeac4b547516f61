"""The Cloud API provider against the fake Meta, in process (no sockets)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_cloudapi.errors import WINDOW_TEXT
from gateway_cloudapi.provider import CloudApiProvider
from gateway_cloudapi.ratelimit import SendPacer
from gateway_fakes.cloudapi import MAGIC_UNDELIVERABLE, FakeClock, FakeCloudApi, signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from gateway.errors import AmbiguousError, PermanentError, TemporaryError
from gateway.models import (
    AccountStatus,
    Attachment,
    Contact,
    Delete,
    DeliveryStatus,
    Location,
    Message,
    Sender,
    StatusUpdate,
)
from gateway.providers import Outgoing, Route, Sent, StatusNotice
from gateway.testing import GatewayHarness, Recorder, running_gateway, send_shaped

pytestmark = pytest.mark.anyio

PNID = "106540352242922"
TOKEN = "EAAGfakeAccessToken0000000000"
SECRET = "fake-app-secret"
CUSTOMER = "16505551234"
ROUTE = Route("main", "wa", "crm")
PDF = b"%PDF-1.4 operator's invoice"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _files(request: Request) -> Response:
    types = {"invoice.pdf": "application/pdf", "photo.jpg": "image/jpeg"}
    name = request.path_params["name"]
    return Response(PDF if name.endswith(".pdf") else b"\xff\xd8jpeg", media_type=types[name])


FILES = Starlette(routes=[StarletteRoute("/{name}", _files)])


@asynccontextmanager
async def harness(
    tmp_path: Path, fake: FakeCloudApi | None = None, **channel: Any
) -> AsyncIterator[tuple[GatewayHarness, FakeCloudApi, CloudApiProvider]]:
    fake = fake or FakeCloudApi(clock=FakeClock(time.time()))
    settings = {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa": {
                "provider": "cloudapi",
                "phone_number_id": PNID,
                "access_token": TOKEN,
                "app_secret": SECRET,
                "verify_token": "verify",
                **channel,
            }
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "t"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }
    apps = {
        "graph.facebook.com": fake.app,
        "lookaside.fbsbx.com": fake.app,
        "files.example": FILES,
        "crm.test": Recorder().app,
    }
    async with running_gateway(settings, apps=apps) as h:
        provider = h.gateway.instances["wa"]
        assert isinstance(provider, CloudApiProvider)
        clock = fake.clock
        provider.clock = clock
        # Time passes only when the provider "sleeps", for the fake and the pacer alike.
        provider.pacer = SendPacer(
            80,
            provider.settings.pair_interval,
            max_hold=provider.settings.max_hold_seconds,
            clock=clock,
        )
        provider.sleep = _sleeper(clock)
        fake.http, fake.callback_url = h.client, "http://gateway.test/webhooks/wa"
        yield h, fake, provider


def _sleeper(clock: Any) -> Any:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return sleep


async def open_window(
    provider: CloudApiProvider, fake: FakeCloudApi, wa_id: str = CUSTOMER
) -> None:
    now = fake.clock()
    fake.last_inbound_at[wa_id] = now
    await provider.windows.saw(wa_id, now)


def outgoing(job_id: int = 1, quoted: str | None = None, **fields: Any) -> Outgoing:
    fields.setdefault("conversation_id", CUSTOMER)
    message = Message(native_id=f"op-{job_id}", sender=Sender("anna"), **fields)
    return Outgoing(
        job_id=job_id, route=ROUTE, source="crm", event=message, quoted_target_id=quoted
    )


async def send_one(provider: CloudApiProvider, item: Outgoing) -> Any:
    (outcome,) = await send_shaped(provider, [item])
    return outcome


# sending ---------------------------------------------------------------------------------
async def test_text_quote_and_long_text_in_parts(tmp_path: Path) -> None:
    async with harness(tmp_path, max_hold_seconds=10) as (_h, fake, provider):
        await open_window(provider, fake)
        long_text = ("word " * 1000).strip()  # 4999 characters
        outcome = await send_one(provider, outgoing(text=long_text, quoted="wamid.q"))
    assert isinstance(outcome, Sent)  # the core split it: two messages, the first quoting
    assert [s.id for s in fake.sent][:1] == [outcome.native_id] and len(fake.sent) == 2
    assert "".join(s.text or "" for s in fake.sent).replace("word", "") == " " * 998
    assert [s.context_id for s in fake.sent] == ["wamid.q", None]
    assert fake.sent[1].at - fake.sent[0].at == pytest.approx(6.0)  # held for the pair rate
    assert outcome.extra["wa_id"] == CUSTOMER


async def test_parts_too_far_apart_are_deferred_and_resumed(tmp_path: Path) -> None:
    async with harness(tmp_path) as (_h, fake, provider):
        await open_window(provider, fake)
        files = (
            Attachment("image", "https://files.example/photo.jpg", mime_type="image/jpeg"),
            Attachment("image", "https://files.example/anim.gif", mime_type="image/gif"),
        )
        item = outgoing(text="two pictures", attachments=files)
        first = await send_one(provider, item)
        assert isinstance(first, TemporaryError) and first.retry_after == pytest.approx(6.0)
        fake.clock.advance(6.0)  # type: ignore[attr-defined]
        second = await send_one(provider, item)
    assert isinstance(second, Sent)
    image, gif = fake.sent
    assert second.native_id == image.id and second.extra["parts"] == [image.id, gif.id]
    assert image.request["image"] == {
        "link": "https://files.example/photo.jpg",
        "caption": "two pictures",
    }
    # WhatsApp shows only JPEG/PNG as images: a GIF goes as a document.
    assert gif.request["document"] == {
        "link": "https://files.example/anim.gif",
        "filename": "anim.gif",
    }


async def test_upload_mode_sends_by_media_id(tmp_path: Path) -> None:
    async with harness(tmp_path, upload_media=True) as (_h, fake, provider):
        await open_window(provider, fake)
        doc = Attachment("document", "https://files.example/invoice.pdf")
        outcome = await send_one(provider, outgoing(text="your invoice", attachments=(doc,)))
    assert isinstance(outcome, Sent)
    (sent,) = fake.sent
    media_id = sent.request["document"]["id"]
    assert fake.media[media_id].content == PDF
    assert fake.media[media_id].mime_type == "application/pdf"
    assert sent.request["document"]["filename"] == "invoice.pdf"
    assert sent.request["document"]["caption"] == "your invoice"


async def test_location_and_contacts(tmp_path: Path) -> None:
    async with harness(tmp_path, max_hold_seconds=10) as (_h, fake, provider):
        await open_window(provider, fake)
        where = Location(55.75, 37.62, name="Office", address="Tverskaya 1")
        card = Contact("Ivan Petrov", phones=("+79001234567",))
        outcome = await send_one(provider, outgoing(location=where, contacts=(card,)))
    assert isinstance(outcome, Sent)
    assert fake.sent[0].request["location"] == {
        "latitude": 55.75, "longitude": 37.62, "name": "Office", "address": "Tverskaya 1"
    }  # fmt: skip
    name = {"formatted_name": "Ivan Petrov", "first_name": "Ivan"}
    assert fake.sent[1].request["contacts"] == [
        {"name": name, "phones": [{"phone": "+79001234567"}]}
    ]


async def test_meta_errors_map_to_delivery_errors(tmp_path: Path) -> None:
    async with harness(tmp_path, pair_interval=0) as (_h, fake, provider):
        await open_window(provider, fake)
        await open_window(provider, fake, MAGIC_UNDELIVERABLE)
        fake.fail_next(code=130429)
        throttled = await send_one(provider, outgoing(text="a"))
        fake.fail_next(html=True)
        proxy = await send_one(provider, outgoing(text="b"))
        fake.fail_next(timeout=True)
        timed_out = await send_one(provider, outgoing(text="c"))
        undeliverable = await send_one(
            provider, outgoing(text="d", conversation_id=MAGIC_UNDELIVERABLE)
        )
        fake.expire_token()
        expired = await send_one(provider, outgoing(text="e"))
    assert isinstance(throttled, TemporaryError) and throttled.code == "130429"
    assert isinstance(proxy, TemporaryError) and proxy.code == "502"
    assert isinstance(timed_out, AmbiguousError)  # Meta may have sent it: never resent blindly
    assert isinstance(undeliverable, PermanentError) and undeliverable.code == "131026"
    assert isinstance(expired, PermanentError) and expired.code == "190"
    assert TOKEN not in str(expired)


async def test_transport_failures(tmp_path: Path) -> None:
    from gateway_cloudapi.client import GraphClient

    async with harness(tmp_path) as (_h, _fake, provider):

        def failing(exc: Exception) -> GraphClient:
            def handler(request: httpx.Request) -> httpx.Response:
                raise exc

            return GraphClient(
                httpx.AsyncClient(transport=httpx.MockTransport(handler)), provider.settings
            )

        def answering(response: httpx.Response) -> GraphClient:
            transport = httpx.MockTransport(lambda request: response)
            return GraphClient(httpx.AsyncClient(transport=transport), provider.settings)

        payload = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text"}
        with pytest.raises(TemporaryError) as refused:
            await failing(httpx.ConnectError("refused")).send_message(payload)
        with pytest.raises(AmbiguousError):
            await failing(httpx.ReadTimeout("slow")).send_message(payload)
        with pytest.raises(TemporaryError) as read_only:
            await failing(httpx.ReadTimeout("slow")).media_info("1")
        with pytest.raises(AmbiguousError):
            await answering(httpx.Response(200, text="<html>ok</html>")).send_message(payload)
    assert not isinstance(refused.value, AmbiguousError)
    assert not isinstance(read_only.value, AmbiguousError)


async def test_unsendable_items(tmp_path: Path) -> None:
    async with harness(tmp_path) as (_h, _fake, provider):
        delete = Outgoing(1, ROUTE, "crm", Delete(CUSTOMER, "op-1"), target_native_id="wamid.x")
        group = outgoing(text="hi all", conversation_id="120363041234567890@g.us")
        outcomes = await provider.send([delete, outgoing(text="  "), group])
    assert [o.code for o in outcomes] == ["unsupported", "empty_message", "invalid_recipient"]
    assert all(isinstance(o, PermanentError) for o in outcomes)


# the 24-hour window ------------------------------------------------------------------------
async def test_window_closed_is_refused_locally(tmp_path: Path) -> None:
    async with harness(tmp_path) as (_h, fake, provider):
        await open_window(provider, fake)
        fake.clock.advance(24 * 3600 + 1)  # type: ignore[attr-defined]
        outcome = await send_one(provider, outgoing(text="still there?"))
        calls = [c for c in fake.calls if c.path.endswith("/messages")]
    assert isinstance(outcome, PermanentError)
    assert (outcome.code, outcome.text) == ("131047", WINDOW_TEXT)
    assert calls == []


async def test_template_replaces_text_outside_the_window(tmp_path: Path) -> None:
    async with harness(tmp_path, template_name="reengage", template_language="ru") as (
        _h,
        fake,
        provider,
    ):
        fake.register_template("reengage", "ru", body_params=1)
        await open_window(provider, fake)
        fake.clock.advance(25 * 3600)  # type: ignore[attr-defined]
        closed = await send_one(provider, outgoing(1, text="Your order\nis ready"))
        # A customer the gateway never saw: Meta refuses free text, the template goes instead.
        unknown = await send_one(provider, outgoing(2, text="Hello", conversation_id="15550001111"))
        with_file = await send_one(
            provider,
            outgoing(
                3, text="x", attachments=(Attachment("image", "https://files.example/photo.jpg"),)
            ),
        )
    assert isinstance(closed, Sent) and closed.extra["template"] == "reengage"
    assert isinstance(unknown, Sent)
    first, second = fake.sent
    assert first.request["template"] == {
        "name": "reengage",
        "language": {"code": "ru", "policy": "deterministic"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Your order is ready"}]}
        ],
    }
    assert second.wa_id == "15550001111" and second.type == "template"
    assert isinstance(with_file, PermanentError) and with_file.code == "131047"
    assert with_file.text.startswith(WINDOW_TEXT)


# webhooks and media ------------------------------------------------------------------------
async def test_signatures_and_other_numbers(tmp_path: Path) -> None:
    async with harness(tmp_path) as (h, fake, _provider):
        fake.customer_writes(CUSTOMER, "hi")
        (delivery,) = await fake.deliver_webhooks()
        other = FakeCloudApi(phone_number_id="999", app_secret=SECRET)
        other.customer_writes(CUSTOMER, "for another number")
        other.http, other.callback_url = h.client, fake.callback_url
        (ignored,) = await other.deliver_webhooks()
        body = b'{"entry": []}'
        put = await h.client.put("/webhooks/wa", content=body)
        unsigned = await h.client.post("/webhooks/wa", content=body)
        signed = {"X-Hub-Signature-256": signature(SECRET, body)}
        garbage = await h.client.post(
            "/webhooks/wa", content=b"[", headers={"X-Hub-Signature-256": signature(SECRET, b"[")}
        )
        empty = await h.client.post("/webhooks/wa", content=body, headers=signed)
        page = await h.client.get("/webhooks/wa/settings")
    assert delivery.status == 200
    assert ignored.status == 200  # answered, so Meta does not retry it for a week
    assert [o.detail["kind"] for o in h.observer.of_type("accepted")] == ["message"]
    assert (put.status_code, unsigned.status_code, garbage.status_code) == (405, 401, 400)
    assert empty.json() == {"ok": True, "accepted": 0, "duplicates": 0}
    assert page.status_code == 404


async def test_media_links_resolve_once_with_a_fresh_url(tmp_path: Path) -> None:
    async with harness(tmp_path) as (h, fake, provider):
        fake.customer_writes(CUSTOMER, "", kind="document", media=PDF, filename="scan.pdf")
        media_id = fake.inbound[0].message["document"]["id"]
        await provider.links.ready()
        link = provider.links.link(media_id, "scan.pdf", "document", fake.clock())
        path = httpx.URL(link).path
        # Meta's five-minute URL has "expired" by the time it is fetched: ask for a new one.
        fake.fail_next(on="download", code=100, http_status=404)
        first = await h.client.get(path)
        again = await h.client.get(path)
        stored = await h.client.get(httpx.URL(first.headers["location"]).path)
        node_calls = [c for c in fake.calls if c.path.endswith(f"/{media_id}")]
        resolved = await provider.resolve_media(
            Attachment("document", f"cloudapi-media:{media_id}")
        )
        untouched = await provider.resolve_media(
            Attachment("image", "https://files.example/photo.jpg")
        )
        forged = await h.client.get(path.replace(media_id, str(int(media_id) + 1)))
        fake.clock.advance(7 * 86400)  # type: ignore[attr-defined]
        expired = await h.client.get(path)
    assert first.status_code == 302
    assert again.headers["location"] == first.headers["location"]
    assert stored.content == PDF
    assert 'filename="scan.pdf"' in stored.headers["content-disposition"]
    assert len(node_calls) == 2  # one expired URL, one fresh; the second fetch used the copy
    assert all(c.headers["authorization"] == f"Bearer {TOKEN}" for c in fake.calls)
    assert resolved.url == first.headers["location"]
    assert untouched.url == "https://files.example/photo.jpg"
    assert (forged.status_code, expired.status_code) == (404, 410)


async def test_media_gone_at_meta(tmp_path: Path) -> None:
    async with harness(tmp_path) as (h, _fake, provider):
        await provider.links.ready()
        link = provider.links.link("1038529999999999", None, "image", None)
        gone = await h.client.get(httpx.URL(link).path)
    assert gone.status_code == 410


# statuses, account state, setup ----------------------------------------------------------
async def test_read_statuses_mark_customer_messages_read(tmp_path: Path) -> None:
    async with harness(tmp_path) as (_h, fake, provider):
        wamid = fake.customer_writes(CUSTOMER, "hi")
        notices = [
            StatusNotice(1, ROUTE, StatusUpdate(wamid, DeliveryStatus.READ)),
            StatusNotice(2, ROUTE, StatusUpdate(wamid, DeliveryStatus.DELIVERED)),
            StatusNotice(3, ROUTE, StatusUpdate("wamid.unknown", DeliveryStatus.READ)),
        ]
        outcomes = await provider.apply_status(notices)
    assert outcomes == [None, None, None]
    assert [r.message_id for r in fake.read_receipts] == [wamid]


async def test_account_state_from_health_and_webhooks(tmp_path: Path) -> None:
    async with harness(tmp_path) as (h, fake, provider):
        assert h.observer.of_type("account_state")[0].detail["state"] == "connected"
        assert provider.display_number == "15550783881"
        fake.transition("flag")
        flagged = await provider.account_state()
        await fake.deliver_webhooks()  # phone_number_quality_update FLAGGED
        fake.transition("ban")
        banned = await provider.account_state()
        await fake.deliver_webhooks()  # account_update DISABLED_UPDATE
        states = [o.detail["state"] for o in h.observer.of_type("account_state")]
    assert flagged.status is AccountStatus.CONNECTED
    assert flagged.detail is not None and flagged.detail.startswith("quality flagged")
    assert banned.status is AccountStatus.BANNED
    assert states == ["connected", "banned"]


async def test_a_refused_token_is_a_startup_problem(tmp_path: Path) -> None:
    fake = FakeCloudApi(clock=FakeClock(time.time()))
    fake.expire_token()
    async with harness(tmp_path, fake) as (h, _fake, provider):
        state = await provider.account_state()
    assert any(
        p.startswith("wa: PermanentError: 190: the Cloud API refused") for p in h.gateway.problems
    )
    assert state.status is AccountStatus.ERROR
    assert TOKEN not in " ".join(h.gateway.problems)


async def test_setup_instructions(tmp_path: Path) -> None:
    async with harness(tmp_path) as (_h, _fake, provider):
        lines = provider.setup_instructions()
    assert "  Callback URL: http://gateway.test/webhooks/wa" in lines
    assert "  Verify token: verify" in lines
