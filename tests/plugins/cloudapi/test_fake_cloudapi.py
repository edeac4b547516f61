"""Tests for the fake WhatsApp Cloud API: it must behave like Meta's, shapes included."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from gateway_fakes.cloudapi import (
    MAGIC_PAIR_RATE,
    MAGIC_THROUGHPUT,
    MAGIC_UNDELIVERABLE,
    MAGIC_WINDOW_CLOSED,
    FakeClock,
    FakeCloudApi,
    signature,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

PNID = "106540352242922"
WABA = "102290129340398"
TOKEN = "EAAGtestToken"
SECRET = "test-app-secret"
VERIFY = "verify-me"
CUSTOMER = "16505551234"
HOOK = "https://gw.example/webhooks/cloudapi"
MESSAGES = f"/v21.0/{PNID}/messages"
WINDOW_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last "
    "replied to this number."
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Receiver:
    """The gateway side: records webhook POSTs and answers with scripted statuses."""

    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # popped per POST; 200 when empty

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            if request.method == "GET":
                q = request.query_params
                if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == VERIFY:
                    return PlainTextResponse(q["hub.challenge"])
                return PlainTextResponse("forbidden", status_code=403)
            body = await request.body()
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(request.headers["x-hub-signature-256"], expected):
                return PlainTextResponse("bad signature", status_code=401)
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
            return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

        return Starlette(routes=[Route("/webhooks/cloudapi", hook, methods=["GET", "POST"])])

    @property
    def payloads(self) -> list[Any]:
        return [json.loads(body) for body in self.bodies]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_750_000_000.0)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def fake(clock: FakeClock, receiver: Receiver) -> AsyncIterator[FakeCloudApi]:
    mounts = {"https://gw.example": httpx.ASGITransport(app=receiver.app())}
    async with httpx.AsyncClient(mounts=mounts) as http:
        yield FakeCloudApi(
            phone_number_id=PNID,
            waba_id=WABA,
            access_token=TOKEN,
            app_secret=SECRET,
            clock=clock,
            http=http,
            callback_url=HOOK,
        )


@pytest.fixture
async def graph(fake: FakeCloudApi) -> AsyncIterator[httpx.AsyncClient]:
    # One transport serves every host, so lookaside media URLs reach the same app.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app),
        base_url="https://graph.facebook.com",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


def text(to: str = CUSTOMER, body: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": body},
        **extra,
    }


def template(to: str = CUSTOMER, name: str = "order_ready", params: int = 1) -> dict[str, Any]:
    parameters = [{"type": "text", "text": str(i)} for i in range(params)]
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": "en_US", "policy": "deterministic"},
            "components": [{"type": "body", "parameters": parameters}],
        },
    }


def error_of(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    assert set(data) == {"error"}
    error: dict[str, Any] = data["error"]
    assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]
    return error


def values(payload: Any) -> list[dict[str, Any]]:
    assert payload["object"] == "whatsapp_business_account"
    return [change["value"] for entry in payload["entry"] for change in entry["changes"]]


# --------------------------------------------------------------------------- send


@pytest.mark.anyio
async def test_send_text_returns_meta_envelope_and_records(
    fake: FakeCloudApi, graph: httpx.AsyncClient
) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    quoted = fake.inbound[0].id
    response = await graph.post(
        MESSAGES, json=text("+1 650-555-1234", context={"message_id": quoted})
    )
    assert response.status_code == 200
    data = response.json()
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+1 650-555-1234", "wa_id": CUSTOMER}]
    [message] = data["messages"]
    assert set(message) == {"id"}  # message_status only comes with templates
    wamid = message["id"]
    assert wamid.startswith("wamid.HBgL")
    assert CUSTOMER.encode() in base64.b64decode(wamid.removeprefix("wamid."))
    sent = fake.sent[0]
    assert (sent.id, sent.wa_id, sent.text, sent.context_id) == (wamid, CUSTOMER, "hello", quoted)
    call = fake.calls[-1]
    assert (call.method, call.host, call.path, call.status) == (
        "POST",
        "graph.facebook.com",
        MESSAGES,
        200,
    )
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.json["text"]["body"] == "hello"


@pytest.mark.anyio
async def test_send_every_outbound_type(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    fake.pair_interval = None
    upload = await graph.post(
        f"/v21.0/{PNID}/media",
        data={"messaging_product": "whatsapp", "type": "image/png"},
        files={"file": ("pic.png", b"\x89PNG fake", "image/png")},
    )
    assert upload.status_code == 200 and set(upload.json()) == {"id"}
    media_id = upload.json()["id"]
    bodies: list[tuple[str, Any]] = [
        ("image", {"id": media_id, "caption": "by id"}),
        ("document", {"link": "https://files.example/i.pdf", "filename": "i.pdf"}),
        ("audio", {"link": "https://files.example/a.ogg"}),
        ("video", {"link": "https://files.example/v.mp4", "caption": "v"}),
        ("sticker", {"link": "https://files.example/s.webp"}),
        ("location", {"latitude": 55.75, "longitude": 37.61, "name": "Office"}),
        ("contacts", [{"name": {"formatted_name": "Ann"}, "phones": [{"phone": "+1 555"}]}]),
        ("reaction", {"message_id": fake.inbound[0].id, "emoji": "\U0001f44d"}),
        ("interactive", {"type": "button", "body": {"text": "?"}, "action": {"buttons": []}}),
    ]
    for kind, obj in bodies:
        response = await graph.post(
            MESSAGES,
            json={"messaging_product": "whatsapp", "to": CUSTOMER, "type": kind, kind: obj},
        )
        assert response.status_code == 200, (kind, response.json())
    assert [m.type for m in fake.sent] == [kind for kind, _ in bodies]
    assert fake.sent[0].text == "by id"
    response = await graph.post(MESSAGES, json=template())
    assert response.json()["messages"][0]["message_status"] == "accepted"


@pytest.mark.anyio
async def test_validation_errors(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    cases: list[tuple[dict[str, Any], int]] = [
        ({**text(), "messaging_product": None}, 100),
        ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, 100),
        ({**text(), "type": "hologram"}, 100),
        (text(body="x" * 4097), 100),
        ({**text(), "text": {}}, 131008),
        (text(to="12"), 131009),
        ({**text(), "type": "image", "image": {"id": "1", "link": "https://x"}}, 131009),
        ({**text(), "type": "image", "image": {"id": "404"}}, 131009),
        ({**template(), "template": {"name": "t"}}, 131008),
        ({**text(), "context": {"id": "x"}}, 131009),
        ({**text(), "biz_opaque_callback_data": "x" * 513}, 100),
        ({**text(), "biz_opaque_callback_data": 42}, 100),
    ]
    for body, code in cases:
        response = await graph.post(MESSAGES, json=body)
        assert response.status_code == 400, body
        error = error_of(response)
        assert (error["code"], error["type"]) == (code, "OAuthException"), body
        assert error["message"].startswith(f"(#{code}) ")
        assert error["error_data"]["messaging_product"] == "whatsapp"
    assert fake.sent == []
    long = error_of(await graph.post(MESSAGES, json=text(body="x" * 4097)))
    assert long["message"] == "(#100) Param text['body'] must be at most 4096 characters long."


@pytest.mark.anyio
async def test_unknown_node_and_bad_version(graph: httpx.AsyncClient) -> None:
    response = await graph.post("/v21.0/999/messages", json=text())
    error = error_of(response)
    assert (error["code"], error["error_subcode"], error["type"]) == (
        100,
        33,
        "GraphMethodException",
    )
    assert "Object with ID '999' does not exist" in error["message"]
    assert "error_data" not in error
    assert error_of(await graph.post(f"/latest/{PNID}/messages", json=text()))["code"] == 2500


@pytest.mark.anyio
async def test_auth_errors(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    missing = await graph.post(MESSAGES, json=text(), headers={"Authorization": ""})
    assert missing.status_code == 400 and error_of(missing)["code"] == 104
    wrong = await graph.post(MESSAGES, json=text(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "invalid_token" in wrong.headers["www-authenticate"]
    error = error_of(wrong)
    assert (error["code"], error["type"]) == (190, "OAuthException")
    by_query = await graph.post(
        MESSAGES, json=text(), params={"access_token": TOKEN}, headers={"Authorization": ""}
    )
    assert by_query.status_code == 200
    fake.expire_token()
    expired = error_of(await graph.post(MESSAGES, json=text()))
    assert (expired["code"], expired["error_subcode"]) == (190, 463)
    assert [call.status for call in fake.calls] == [400, 401, 200, 401]
    assert len(fake.sent) == 1


# --------------------------------------------------------------------------- window, magic


@pytest.mark.anyio
async def test_24h_window(fake: FakeCloudApi, graph: httpx.AsyncClient, clock: FakeClock) -> None:
    closed = await graph.post(MESSAGES, json=text())
    assert closed.status_code == 400
    assert closed.json()["error"] == {
        "message": "(#131047) Re-engagement message",
        "type": "OAuthException",
        "code": 131047,
        "error_data": {"messaging_product": "whatsapp", "details": WINDOW_DETAILS},
        "fbtrace_id": closed.json()["error"]["fbtrace_id"],
    }
    assert (await graph.post(MESSAGES, json=template())).status_code == 200
    clock.advance(10)
    fake.customer_writes(CUSTOMER, "hi")
    clock.advance(24 * 3600 - 1)
    assert (await graph.post(MESSAGES, json=text())).status_code == 200
    clock.advance(2)
    assert error_of(await graph.post(MESSAGES, json=text()))["code"] == 131047
    assert fake.window_open(CUSTOMER) is False


@pytest.mark.anyio
async def test_window_error_delivered_as_failed_status(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.error_delivery = "webhook"
    response = await graph.post(MESSAGES, json=text(biz_opaque_callback_data="ticket-7"))
    assert response.status_code == 200
    wamid = response.json()["messages"][0]["id"]
    await fake.deliver_webhooks()
    [status] = values(receiver.payloads[0])[0]["statuses"]
    assert status == {
        "id": wamid,
        "status": "failed",
        "timestamp": "1750000000",
        "recipient_id": CUSTOMER,
        "biz_opaque_callback_data": "ticket-7",
        "errors": [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": WINDOW_DETAILS},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ],
    }
    assert fake.sent[0].status == "failed"


@pytest.mark.anyio
async def test_magic_numbers(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    for number in (MAGIC_UNDELIVERABLE, MAGIC_WINDOW_CLOSED, MAGIC_THROUGHPUT, MAGIC_PAIR_RATE):
        fake.customer_writes(number, "I did write")
    undeliverable = error_of(await graph.post(MESSAGES, json=template(MAGIC_UNDELIVERABLE)))
    assert undeliverable["code"] == 131026
    assert undeliverable["message"] == "(#131026) Message Undeliverable."
    assert error_of(await graph.post(MESSAGES, json=text(MAGIC_WINDOW_CLOSED)))["code"] == 131047
    assert (await graph.post(MESSAGES, json=template(MAGIC_WINDOW_CLOSED))).status_code == 200
    assert error_of(await graph.post(MESSAGES, json=text(MAGIC_THROUGHPUT)))["code"] == 130429
    assert error_of(await graph.post(MESSAGES, json=text(MAGIC_PAIR_RATE)))["code"] == 131056
    fake.error_delivery = "webhook"
    accepted = await graph.post(MESSAGES, json=text(MAGIC_UNDELIVERABLE))
    assert accepted.status_code == 200
    assert fake.last_sent.status == "failed" and fake.last_sent.errors[0]["code"] == 131026


# --------------------------------------------------------------------------- rate limits


@pytest.mark.anyio
async def test_throughput_limit_80_per_second(
    fake: FakeCloudApi, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    for i in range(80):
        response = await graph.post(MESSAGES, json=template(f"1650555{i:04d}"))
        assert response.status_code == 200
    limited = await graph.post(MESSAGES, json=template("16505559999"))
    error = error_of(limited)
    assert (limited.status_code, error["code"]) == (400, 130429)
    assert error["message"] == "(#130429) Rate limit hit"
    clock.advance(1.0)
    assert (await graph.post(MESSAGES, json=template("16505559999"))).status_code == 200
    fake.transition("upgrade_throughput")
    assert fake.mps == 1000 and fake.phone.throughput_level == "HIGH"


@pytest.mark.anyio
async def test_pair_rate_limit(
    fake: FakeCloudApi, graph: httpx.AsyncClient, clock: FakeClock
) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    assert (await graph.post(MESSAGES, json=text())).status_code == 200
    clock.advance(5.9)
    error = error_of(await graph.post(MESSAGES, json=text()))
    assert error["code"] == 131056
    assert error["message"] == "(#131056) (Business Account, Consumer Account) pair rate limit hit"
    fake.customer_writes("16505550000", "another customer is not paced")
    assert (await graph.post(MESSAGES, json=text("16505550000"))).status_code == 200
    clock.advance(0.1)
    assert (await graph.post(MESSAGES, json=text())).status_code == 200
    clock.advance(600)
    fake.pair_burst = 3
    codes = [(await graph.post(MESSAGES, json=text())).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 400]


# --------------------------------------------------------------------------- media


@pytest.mark.anyio
async def test_inbound_media_download_flow(
    fake: FakeCloudApi, graph: httpx.AsyncClient, clock: FakeClock, receiver: Receiver
) -> None:
    content = b"\xff\xd8\xff real-ish jpeg"
    fake.customer_writes(CUSTOMER, "look", kind="image", media=content)
    await fake.deliver_webhooks()
    image = values(receiver.payloads[0])[0]["messages"][0]["image"]
    assert image["sha256"] == hashlib.sha256(content).hexdigest()
    assert image["caption"] == "look" and image["mime_type"] == "image/jpeg"

    meta = (await graph.get(f"/v21.0/{image['id']}", params={"phone_number_id": PNID})).json()
    assert meta == {
        "messaging_product": "whatsapp",
        "url": meta["url"],
        "mime_type": "image/jpeg",
        "sha256": image["sha256"],
        "file_size": str(len(content)),
        "id": image["id"],
    }
    url = httpx.URL(meta["url"])
    assert (url.host, url.path) == ("lookaside.fbsbx.com", "/whatsapp_business/attachments/")
    assert url.params["mid"] == image["id"]
    anonymous = await graph.get(meta["url"], headers={"Authorization": ""})
    assert anonymous.status_code == 401
    downloaded = await graph.get(meta["url"])
    assert downloaded.status_code == 200 and downloaded.content == content
    assert downloaded.headers["content-type"] == "image/jpeg"
    assert fake.calls[-1].host == "lookaside.fbsbx.com"

    clock.advance(301)
    assert (await graph.get(meta["url"])).status_code == 404
    fresh = (await graph.get(f"/v21.0/{image['id']}")).json()["url"]
    assert fresh != meta["url"] and (await graph.get(fresh)).content == content
    clock.advance(7 * 86400)
    expired = error_of(await graph.get(f"/v21.0/{image['id']}"))
    assert (expired["code"], expired["error_subcode"]) == (100, 33)


@pytest.mark.anyio
async def test_upload_validation_and_delete(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    path = f"/v21.0/{PNID}/media"
    files = {"file": ("a.pdf", b"%PDF-1.4", "application/pdf")}
    no_product = await graph.post(path, data={"type": "application/pdf"}, files=files)
    assert error_of(no_product)["code"] == 100
    no_file = await graph.post(path, data={"messaging_product": "whatsapp", "type": "image/png"})
    assert error_of(no_file)["message"] == "(#100) The parameter file is required."
    exe = {"file": ("x.exe", b"MZ", "application/x-msdownload")}
    bad_type = await graph.post(path, data={"messaging_product": "whatsapp"}, files=exe)
    assert (
        "Param file must be a file with one of the following types"
        in (error_of(bad_type)["message"])
    )
    big = {"file": ("s.webp", b"x" * (500 * 1024 + 1), "image/webp")}
    too_big = await graph.post(path, data={"messaging_product": "whatsapp"}, files=big)
    assert error_of(too_big)["code"] == 131053
    ok = await graph.post(path, data={"messaging_product": "whatsapp"}, files=files)
    media_id = ok.json()["id"]
    assert fake.media[media_id].content == b"%PDF-1.4"
    assert fake.media[media_id].mime_type == "application/pdf"
    assert (await graph.delete(f"/v21.0/{media_id}")).json() == {"success": True}
    assert error_of(await graph.get(f"/v21.0/{media_id}"))["code"] == 100


# --------------------------------------------------------------------------- number health


@pytest.mark.anyio
async def test_phone_number_fields(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    default = (await graph.get(f"/v21.0/{PNID}")).json()
    assert default["display_phone_number"] == "+1 555-078-3881"
    assert default["quality_rating"] == "GREEN" and default["id"] == PNID
    assert default["throughput"] == {"level": "STANDARD"}
    assert default["webhook_configuration"] == {"application": HOOK}
    asked = await graph.get(
        f"/v21.0/{PNID}", params={"fields": "quality_rating,status,name_status,health_status"}
    )
    data = asked.json()
    assert set(data) == {"quality_rating", "status", "name_status", "health_status", "id"}
    assert data["status"] == "CONNECTED" and data["name_status"] == "APPROVED"
    assert data["health_status"]["can_send_message"] == "AVAILABLE"
    unknown = error_of(await graph.get(f"/v21.0/{PNID}", params={"fields": "colour"}))
    assert unknown["message"] == (
        "(#100) Tried accessing nonexisting field (colour) on node type "
        "(WhatsAppBusinessPhoneNumber)"
    )
    listing = (await graph.get(f"/v21.0/{WABA}/phone_numbers")).json()
    assert listing["data"][0]["id"] == PNID and "cursors" in listing["paging"]


@pytest.mark.anyio
async def test_account_state_machine(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.transition("flag")
    fields = {"fields": "status,quality_rating,health_status"}
    data = (await graph.get(f"/v21.0/{PNID}", params=fields)).json()
    assert (data["status"], data["quality_rating"]) == ("FLAGGED", "RED")
    assert data["health_status"]["can_send_message"] == "LIMITED"
    assert (await graph.post(MESSAGES, json=template())).status_code == 200  # flagged still sends
    with pytest.raises(ValueError, match="cannot reinstate"):
        fake.transition("reinstate")
    fake.transition("unflag")
    fake.transition("restrict")
    assert error_of(await graph.post(MESSAGES, json=template("16505550001")))["code"] == 368
    fake.customer_writes("16505550001", "hi")
    assert (await graph.post(MESSAGES, json=text("16505550001"))).status_code == 200
    fake.transition("lift_restriction")
    fake.transition("ban")
    assert error_of(await graph.post(MESSAGES, json=template("16505550002")))["code"] == 131031
    fake.transition("reinstate")
    fake.transition("disconnect")
    assert error_of(await graph.post(MESSAGES, json=template("16505550003")))["code"] == 133010
    fake.transition("register")
    fake.transition("downgrade")
    assert fake.phone.messaging_limit_tier == "TIER_250"

    fake.pending = [event for event in fake.pending if event.kind == "value"]
    await fake.deliver_webhooks(batch=False)
    fields_sent = [p["entry"][0]["changes"][0]["field"] for p in receiver.payloads]
    events = [values(p)[0]["event"] for p in receiver.payloads]
    assert events == [
        "FLAGGED",
        "UNFLAGGED",
        "ACCOUNT_RESTRICTION",
        "DISABLED_UPDATE",
        "DISABLED_UPDATE",
        "DOWNGRADE",
    ]
    assert fields_sent[0] == "phone_number_quality_update" and fields_sent[2] == "account_update"
    assert values(receiver.payloads[3])[0]["ban_info"]["waba_ban_state"] == ["DISABLE"]
    assert values(receiver.payloads[5])[0]["old_limit"] == "TIER_1K"
    assert all(p["entry"][0]["time"] == 1_750_000_000 for p in receiver.payloads)


# --------------------------------------------------------------------------- webhooks


@pytest.mark.anyio
async def test_inbound_text_webhook_is_signed_and_spec_shaped(
    fake: FakeCloudApi, receiver: Receiver
) -> None:
    wamid = fake.customer_writes(CUSTOMER, "Does it come in another color?", name="Sheena Nelson")
    [delivery] = await fake.deliver_webhooks()
    assert delivery.ok and delivery.attempt == 1
    body = receiver.bodies[0]
    assert receiver.headers[0]["x-hub-signature-256"] == signature(SECRET, body)
    assert receiver.headers[0]["content-type"] == "application/json"
    assert json.loads(body) == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PNID,
                            },
                            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CUSTOMER}],
                            "messages": [
                                {
                                    "from": CUSTOMER,
                                    "id": wamid,
                                    "timestamp": "1750000000",
                                    "type": "text",
                                    "text": {"body": "Does it come in another color?"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    assert fake.pending == []


@pytest.mark.anyio
async def test_body_escaped_like_meta(fake: FakeCloudApi, receiver: Receiver) -> None:
    fake.customer_writes(CUSTOMER, "Привет", kind="document", filename="a/b.pdf")
    await fake.deliver_webhooks()
    body = receiver.bodies[0]
    assert b"application\\/pdf" in body and b"\\u041f" in body
    document = values(json.loads(body))[0]["messages"][0]["document"]
    assert document["caption"] == "Привет" and document["filename"] == "a/b.pdf"
    reencoded = json.dumps(json.loads(body)).encode()
    assert signature(SECRET, reencoded) != signature(SECRET, body)


@pytest.mark.anyio
async def test_every_inbound_kind(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    sent = (await graph.post(MESSAGES, json=template())).json()["messages"][0]["id"]
    kinds = [
        "image",
        "video",
        "document",
        "audio",
        "voice",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "reaction",
        "order",
        "system",
        "request_welcome",
        "unsupported",
    ]
    for kind in kinds:
        fake.customer_writes(CUSTOMER, "x", kind=kind)
    fake.customer_writes(CUSTOMER, "quoting", context=sent, forwarded=True)
    fake.pending = [event for event in fake.pending if event.kind == "message"]
    await fake.deliver_webhooks(batch=False)
    messages = [values(p)[0]["messages"][0] for p in receiver.payloads][1:]
    by_kind = dict(zip([*kinds, "reply"], messages, strict=True))
    assert by_kind["voice"]["type"] == "audio" and by_kind["voice"]["audio"]["voice"] is True
    assert by_kind["audio"]["audio"]["voice"] is False
    assert by_kind["voice"]["audio"]["mime_type"] == "audio/ogg; codecs=opus"
    assert by_kind["sticker"]["sticker"]["mime_type"] == "image/webp"
    assert "caption" not in by_kind["sticker"]["sticker"]
    assert set(by_kind["location"]["location"]) >= {"latitude", "longitude", "name"}
    assert by_kind["contacts"]["contacts"][0]["name"]["formatted_name"] == "x"
    assert by_kind["interactive"]["interactive"]["button_reply"]["title"] == "x"
    assert by_kind["button"]["button"] == {"payload": "x", "text": "x"}
    assert by_kind["button"]["context"]["id"] == sent
    assert by_kind["reaction"]["reaction"] == {"message_id": sent, "emoji": "x"}
    assert "context" not in by_kind["reaction"]
    assert by_kind["unsupported"]["errors"][0]["code"] == 131051
    assert "request_welcome" not in by_kind["request_welcome"]
    assert by_kind["reply"]["context"] == {"from": "15550783881", "id": sent, "forwarded": True}
    with pytest.raises(ValueError, match="a reaction needs context"):
        fake.customer_writes("16505550000", "x", kind="reaction")
    with pytest.raises(ValueError, match="unknown kind"):
        fake.customer_writes(CUSTOMER, "x", kind="hologram")


@pytest.mark.anyio
async def test_statuses_in_and_out_of_order(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    await fake.deliver_webhooks()
    wamid = (await graph.post(MESSAGES, json=text())).json()["messages"][0]["id"]
    fake.mark_delivered(wamid)
    fake.mark_read(wamid)
    await fake.deliver_webhooks()
    [value] = values(receiver.payloads[1])
    assert [s["status"] for s in value["statuses"]] == ["sent", "delivered", "read"]
    sent_status = value["statuses"][0]
    assert sent_status["conversation"]["origin"] == {"type": "service"}
    assert sent_status["pricing"]["category"] == "service"
    assert "conversation" not in value["statuses"][2]
    assert {s["recipient_id"] for s in value["statuses"]} == {CUSTOMER}

    fake.mark_sent(wamid)
    fake.mark_delivered(wamid)
    fake.mark_read(wamid)
    await fake.deliver_webhooks(shuffle_statuses=True, batch=False)
    order = [values(p)[0]["statuses"][0]["status"] for p in receiver.payloads[2:]]
    assert order == ["read", "delivered", "sent"]
    fake.mark_failed(wamid, 131026)
    await fake.deliver_webhooks()
    failed = values(receiver.payloads[-1])[0]["statuses"][0]
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 131026
    with pytest.raises(KeyError):
        fake.mark_read("wamid.unknown")


@pytest.mark.anyio
async def test_callback_data_is_echoed_in_every_status_and_nowhere_else(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.pair_interval = None
    fake.customer_writes(CUSTOMER, "hi")
    await fake.deliver_webhooks()
    tag = "t" * 512  # the longest Meta takes
    answer = (await graph.post(MESSAGES, json={**text(), "biz_opaque_callback_data": tag})).json()
    assert "biz_opaque_callback_data" not in json.dumps(answer)  # not in the send's answer
    wamid = answer["messages"][0]["id"]
    untagged = (await graph.post(MESSAGES, json=text())).json()["messages"][0]["id"]
    fake.mark_delivered(wamid)
    fake.mark_read(wamid)
    fake.mark_failed(untagged, 131026)
    await fake.deliver_webhooks()
    [value] = values(receiver.payloads[-1])
    echoed = {(s["id"], s["status"]): s.get("biz_opaque_callback_data") for s in value["statuses"]}
    assert echoed == {
        (wamid, "sent"): tag,
        (wamid, "delivered"): tag,
        (wamid, "read"): tag,
        (untagged, "sent"): None,
        (untagged, "failed"): None,
    }


@pytest.mark.anyio
async def test_batching_and_duplicates(
    fake: FakeCloudApi, graph: httpx.AsyncClient, receiver: Receiver
) -> None:
    first = fake.customer_writes(CUSTOMER, "one")
    fake.customer_writes("16505550000", "other customer")
    second = fake.customer_writes(CUSTOMER, "two")
    wamid = (await graph.post(MESSAGES, json=text())).json()["messages"][0]["id"]
    fake.mark_read(wamid)
    fake.emit_error(130429)
    deliveries = await fake.deliver_webhooks(duplicate=2)
    assert len(deliveries) == 3 and len(set(receiver.bodies)) == 1
    assert len({h["x-hub-signature-256"] for h in receiver.headers}) == 1
    payload = receiver.payloads[0]
    assert [entry["id"] for entry in payload["entry"]] == [WABA, WABA]
    changes = values(payload)
    assert [m["id"] for m in changes[0]["messages"]] == [first, second]
    assert changes[1]["contacts"][0]["wa_id"] == "16505550000"
    assert [s["status"] for s in changes[2]["statuses"]] == ["sent", "read"]
    assert changes[3]["errors"][0]["code"] == 130429
    assert "messages" not in changes[3] and "statuses" not in changes[3]


@pytest.mark.anyio
async def test_retries_use_the_clock_and_give_up_after_7_days(
    fake: FakeCloudApi, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.statuses = [500]
    fake.customer_writes(CUSTOMER, "hi")
    [failed] = await fake.deliver_webhooks()
    assert failed.status == 500 and not failed.ok and len(fake.retries) == 1
    assert await fake.retry_webhooks() == []  # backoff not elapsed on the fake clock
    receiver.statuses = [502]
    [forced] = await fake.retry_webhooks(force=True)
    assert (forced.status, forced.attempt) == (502, 2)
    clock.advance(fake.webhook_retry_base)
    assert await fake.retry_webhooks() == []  # the second backoff (30 s) doubled
    clock.advance(fake.webhook_retry_base)
    [retried] = await fake.retry_webhooks()
    assert retried.ok and retried.attempt == 3 and retried.body == failed.body
    assert fake.retries == []

    receiver.statuses = [503] * 1000
    fake.customer_writes(CUSTOMER, "again")
    await fake.deliver_webhooks()
    attempts = 1
    while fake.retries:
        clock.advance(fake.webhook_retry_cap)
        attempts += len(await fake.retry_webhooks())
    assert len(fake.dead_webhooks) == 1
    assert 7 * 86400 / 3600 < attempts < 7 * 86400 / 3600 + 20


@pytest.mark.anyio
async def test_transport_error_is_retried(fake: FakeCloudApi) -> None:
    fake.callback_url = "https://unmounted.example/hook"
    fake.http = httpx.AsyncClient(transport=httpx.MockTransport(_refuse))
    fake.customer_writes(CUSTOMER, "hi")
    [delivery] = await fake.deliver_webhooks()
    assert delivery.status is None and "ConnectError" in str(delivery.error)
    assert len(fake.retries) == 1
    await fake.http.aclose()


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.mark.anyio
async def test_verify_webhook(fake: FakeCloudApi) -> None:
    fake.callback_url = None
    assert await fake.verify_webhook(HOOK, "wrong") is False
    assert fake.callback_url is None
    assert await fake.verify_webhook(HOOK, VERIFY) is True
    assert fake.callback_url == HOOK


# --------------------------------------------------------------------------- faults, misc


@pytest.mark.anyio
async def test_injected_faults(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.customer_writes(CUSTOMER, "hi")
    fake.pair_interval = None
    fake.fail_next()
    server = await graph.post(MESSAGES, json=text())
    assert server.status_code == 500 and error_of(server)["code"] == 131000
    fake.fail_next(code=2, http_status=503)
    assert (await graph.post(MESSAGES, json=text())).status_code == 503
    fake.fail_next(html=True)
    proxy = await graph.post(MESSAGES, json=text())
    assert proxy.status_code == 502 and proxy.text.startswith("<html>")
    fake.fail_next(timeout=True)
    with pytest.raises(httpx.ReadTimeout):
        await graph.post(MESSAGES, json=text())
    assert len(fake.sent) == 1  # accepted although the client saw a timeout
    fake.fail_next(timeout=True, after_accept=False)
    with pytest.raises(httpx.ReadTimeout):
        await graph.post(MESSAGES, json=text())
    assert len(fake.sent) == 1
    assert fake.calls[-1].status is None
    fake.fail_next(on="node")
    assert (await graph.post(MESSAGES, json=text())).status_code == 200
    assert (await graph.get(f"/v21.0/{PNID}")).status_code == 500


@pytest.mark.anyio
async def test_mark_as_read_endpoint(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    inbound = fake.customer_writes(CUSTOMER, "hi")
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": inbound,
        "typing_indicator": {"type": "text"},
    }
    assert (await graph.post(MESSAGES, json=body)).json() == {"success": True}
    assert fake.read_receipts[0].message_id == inbound
    assert fake.read_receipts[0].typing_indicator == {"type": "text"}
    unknown = await graph.post(MESSAGES, json={**body, "message_id": "wamid.nope"})
    assert error_of(unknown)["code"] == 100
    assert fake.sent == []


@pytest.mark.anyio
async def test_templates_registry(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.pair_interval = None
    fake.register_template("order_ready", body_params=1)
    fake.register_template("promo", status="PAUSED", category="MARKETING")
    assert (await graph.post(MESSAGES, json=template())).status_code == 200
    assert error_of(await graph.post(MESSAGES, json=template(name="nope")))["code"] == 132001
    assert error_of(await graph.post(MESSAGES, json=template(params=2)))["code"] == 132000
    assert error_of(await graph.post(MESSAGES, json=template(name="promo")))["code"] == 132015


@pytest.mark.anyio
async def test_wa_id_alias(fake: FakeCloudApi, graph: httpx.AsyncClient) -> None:
    fake.wa_id_aliases["5511987654321"] = "551187654321"
    response = await graph.post(MESSAGES, json=template("+55 11 98765-4321"))
    assert response.json()["contacts"] == [{"input": "+55 11 98765-4321", "wa_id": "551187654321"}]


@pytest.mark.anyio
async def test_deterministic_across_instances(clock: FakeClock) -> None:
    bodies = []
    for _ in range(2):
        fake = FakeCloudApi(clock=FakeClock(clock.now))
        fake.customer_writes(CUSTOMER, "hi", kind="image")
        bodies.append([fake.inbound[0].id, fake.inbound[0].message["image"]["id"]])
    assert bodies[0] == bodies[1]


@pytest.mark.anyio
async def test_control_endpoints(fake: FakeCloudApi, receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://fake"
    ) as control:
        written = await control.post(
            "/_fake/customer_writes", json={"wa_id": CUSTOMER, "text": "hi"}
        )
        assert written.json()["id"] == fake.inbound[0].id
        delivered = await control.post("/_fake/deliver", json={})
        assert delivered.json()[0]["status"] == 200
        assert (await control.post("/_fake/advance", json={"seconds": 5})).json()["now"] == (
            1_750_000_005.0
        )
        phone = await control.post("/_fake/phone", json={"event": "flag"})
        assert phone.json()["status"] == "FLAGGED"
        assert (await control.get("/_fake/sent")).json() == []
        assert (await control.get("/_fake/inbound")).json()[0]["wa_id"] == CUSTOMER
        fake.callback_url = None
        assert (await control.post("/_fake/deliver", json={})).status_code == 409
    assert fake.calls == []  # control traffic is not gateway traffic
