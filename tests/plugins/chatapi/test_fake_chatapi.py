"""The fake Chat API behaves like spec section 1 says the real one does."""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes.chatapi import FakeChatApi, Magic, ManualClock, magic_phone
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.testing.fake_common import IdGen, magic_of, png_bytes, qr_png, to_chat_id

HOOK = "https://gw.example/hook"
CUSTOMER = "79001234567"
CHAT = "79001234567@c.us"
MESSAGE_KEYS = {
    "id",
    "body",
    "fromMe",
    "self",
    "isForwarded",
    "author",
    "time",
    "chatId",
    "messageNumber",
    "type",
    "senderName",
    "caption",
    "quotedMsgBody",
    "quotedMsgId",
    "quotedMsgType",
    "chatName",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """The gateway's webhook endpoint: records requests, answers from a script."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[int | str] = []
        self.app = Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        outcome = self.script.pop(0) if self.script else 200
        if outcome == "timeout":
            raise httpx.ReadTimeout("gateway too slow")
        return Response(status_code=int(outcome))


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def fake(receiver: Receiver) -> AsyncIterator[FakeChatApi]:
    async with httpx.AsyncClient(
        mounts={"https://gw.example": httpx.ASGITransport(app=receiver.app)}
    ) as http:
        yield FakeChatApi(http=http, webhook_url=HOOK, settings={"ackNotificationsOn": True})


@pytest.fixture
async def api(fake: FakeChatApi) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(
        transport=transport, base_url=fake.base_url, params={"token": fake.token}
    ) as client:
        yield client


# -- envelope, auth, settings --------------------------------------------------------------


@pytest.mark.anyio
async def test_token_instance_method_and_verb_are_checked(fake: FakeChatApi) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.host
    ) as raw:
        bad_token = await raw.get("/instance1101/status", params={"token": "nope"})
        assert bad_token.status_code == 401
        assert "Wrong token" in bad_token.json()["error"]
        assert (await raw.get("/instance1101/status")).status_code == 401
        other = await raw.get("/instance9999/status", params={"token": "tok"})
        assert other.status_code == 404
        unknown = await raw.get("/instance1101/sendCarrierPigeon", params={"token": "tok"})
        assert unknown.status_code == 404
        wrong_verb = await raw.get("/instance1101/sendMessage", params={"token": "tok"})
        assert wrong_verb.status_code == 405
    assert fake.url("status") == "https://api.chat-api.test/instance1101/status?token=tok"


@pytest.mark.anyio
async def test_settings_post_answers_current_settings_and_what_changed(
    fake: FakeChatApi, api: httpx.AsyncClient
) -> None:
    got = (await api.get("/settings")).json()
    assert got["webhookUrl"] == HOOK and got["guaranteedHooks"] is False and "update" not in got

    resp = await api.post("/settings", json={"guaranteedHooks": True, "ackNotificationsOn": True})
    body = resp.json()
    assert body["update"] == {"guaranteedHooks": True}
    assert body["guaranteedHooks"] is True and body["webhookUrl"] == HOOK

    # Form bodies are accepted too, as many PHP clients post them.
    form = await api.post("/settings", data={"webhookUrl": "", "statusNotificationsOn": "true"})
    assert form.json()["update"] == {"webhookUrl": "", "statusNotificationsOn": True}
    assert fake.settings.webhookUrl == ""

    assert (await api.post("/settings", json={"ackNotificationsOn": "maybe"})).status_code == 400
    hook = await api.post("/webhook", json={"webhookUrl": HOOK})
    assert hook.json()["set"] is True and fake.settings.webhookUrl == HOOK


# -- sending -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_message_returns_serialized_id_and_queue_number(
    fake: FakeChatApi, api: httpx.AsyncClient
) -> None:
    first = (await api.post("/sendMessage", json={"chatId": CHAT, "body": "Hi 👋"})).json()
    second = (await api.post("/message", data={"phone": CUSTOMER, "body": "again"})).json()

    assert first["sent"] is True and first["message"] == f"Sent to {CHAT}"
    assert re.fullmatch(rf"true_{CHAT}_3EB0[0-9A-F]{{16}}", first["id"])
    assert (first["queueNumber"], second["queueNumber"]) == (1, 2)
    assert [s.id for s in fake.sent] == [first["id"], second["id"]]
    assert fake.sent[0].body == "Hi 👋" and fake.sent[0].type == "chat"
    assert fake.sent[0].status == "sent" and fake.sent[0].message_number == 1

    # Same seed, same order of events -> same ids, so snapshots are stable.
    twin = FakeChatApi()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=twin.app), base_url=twin.base_url
    ) as twin_api:
        again = await twin_api.post(
            "/sendMessage", params={"token": "tok"}, json={"chatId": CHAT, "body": "x"}
        )
    assert again.json()["id"] == first["id"]


@pytest.mark.anyio
async def test_destination_is_exactly_one_of_chat_id_or_phone(api: httpx.AsyncClient) -> None:
    both = await api.post("/sendMessage", json={"chatId": CHAT, "phone": CUSTOMER, "body": "x"})
    neither = await api.post("/sendMessage", json={"body": "x"})
    plus = await api.post("/sendMessage", json={"phone": "+79001234567", "body": "x"})
    no_body = await api.post("/sendMessage", json={"chatId": CHAT})
    assert [r.status_code for r in (both, neither, plus, no_body)] == [400, 400, 400, 400]
    assert "error" in both.json()


@pytest.mark.anyio
async def test_send_file_by_url_data_uri_and_multipart(
    fake: FakeChatApi, api: httpx.AsyncClient
) -> None:
    by_url = await api.post(
        "/sendFile",
        json={"chatId": CHAT, "body": "https://files.example/a.pdf", "filename": "a.pdf"},
    )
    png = png_bytes([[True, False], [False, True]])
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    by_uri = await api.post(
        "/sendFile",
        json={"chatId": CHAT, "body": data_uri, "filename": "pic.png", "caption": "look"},
    )
    by_part = await api.post(
        "/sendFile",
        data={"chatId": CHAT, "filename": "clip.mp4"},
        files={"body": ("clip.mp4", b"\x00\x00mp4", "video/mp4")},
    )
    no_name = await api.post("/sendFile", json={"chatId": CHAT, "body": "https://x/y"})
    assert [r.status_code for r in (by_url, by_uri, by_part)] == [200, 200, 200]
    assert no_name.status_code == 400

    doc, image, video = fake.sent
    assert (doc.type, doc.body) == ("document", "https://files.example/a.pdf")
    assert (image.type, image.caption) == ("image", "look")
    assert video.type == "video"
    # Inline files are re-hosted by the fake, and the gateway can download them back.
    hosted = await api.get(image.body)
    assert hosted.content == png and hosted.headers["content-type"] == "image/png"
    assert (await api.get(video.body)).content == b"\x00\x00mp4"


@pytest.mark.anyio
async def test_location_contact_vcard_and_ptt(fake: FakeChatApi, api: httpx.AsyncClient) -> None:
    await api.post(
        "/sendLocation",
        json={"chatId": CHAT, "lat": 55.75, "lng": 37.61, "address": "Red Sq\nMoscow"},
    )
    await api.post("/sendContact", json={"chatId": CHAT, "contactId": "79005554433@c.us"})
    await api.post(
        "/sendVCard", json={"chatId": CHAT, "vcard": "BEGIN:VCARD\nVERSION:3.0\nEND:VCARD"}
    )
    await api.post("/sendPTT", json={"chatId": CHAT, "audio": "https://files.example/v.ogg"})
    bad = await api.post("/sendLocation", json={"chatId": CHAT, "lat": "north", "lng": 1})
    assert bad.status_code == 400
    location, contact, card, ptt = fake.sent
    assert (location.type, location.body, location.caption) == (
        "location",
        "55.75;37.61",
        "Red Sq\nMoscow",
    )
    assert contact.type == "vcard" and "waid=79005554433" in contact.body
    assert card.type == "vcard" and ptt.type == "ptt"


@pytest.mark.anyio
async def test_quoted_reply_is_echoed_with_the_quoted_message(
    fake: FakeChatApi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    question = fake.customer_writes(CUSTOMER, "Which size?", sender_name="Ivan")
    reply = await api.post(
        "/sendMessage", json={"chatId": CHAT, "body": "M", "quotedMsgId": question}
    )
    await fake.deliver_webhooks()

    messages = receiver.bodies[0]["messages"]
    echo = messages[1]
    assert echo["id"] == reply.json()["id"] and echo["fromMe"] is True
    assert (echo["quotedMsgId"], echo["quotedMsgBody"], echo["quotedMsgType"]) == (
        question,
        "Which size?",
        "chat",
    )
    assert echo["chatName"] == "Ivan" and echo["author"] == fake.me_id


# -- inbound webhooks ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_inbound_messages_are_batched_in_spec_shape(
    fake: FakeChatApi, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    text_id = fake.customer_writes(CUSTOMER, "Hello, is the shop open?", sender_name="Ivan")
    image_id = fake.customer_writes(CUSTOMER, kind="image", caption="receipt", sender_name="Ivan")
    fake.customer_writes(CUSTOMER, kind="location", location=(55.1, 37.2))
    fake.customer_writes(CUSTOMER, kind="vcard", contacts=[("Anna", "79005550000")])
    fake.customer_writes(CUSTOMER, kind="call_log")

    report = await fake.deliver_webhooks()

    assert report.delivered == 1 and report.pending == 0 and len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert set(body) == {"instanceId", "messages"} and body["instanceId"] == "1101"
    text, image, location, card, call = body["messages"]
    assert set(text) == MESSAGE_KEYS
    assert text == {
        "id": text_id,
        "body": "Hello, is the shop open?",
        "fromMe": False,
        "self": 0,
        "isForwarded": 0,
        "author": CHAT,
        "time": 1_700_000_000,
        "chatId": CHAT,
        "messageNumber": 1,
        "type": "chat",
        "senderName": "Ivan",
        "caption": None,
        "quotedMsgBody": None,
        "quotedMsgId": None,
        "quotedMsgType": None,
        "chatName": "Ivan",
    }
    assert re.fullmatch(rf"false_{CHAT}_[0-9A-F]{{32}}", text_id)
    assert image["id"] == image_id and image["type"] == "image" and image["caption"] == "receipt"
    downloaded = await api.get(image["body"])
    assert downloaded.content.startswith(b"\x89PNG")
    assert (location["type"], location["body"]) == ("location", "55.1;37.2")
    assert card["type"] == "vcard" and card["body"].startswith("BEGIN:VCARD")
    assert (call["type"], call["body"]) == ("call_log", "[Call]")
    assert [m["messageNumber"] for m in body["messages"]] == [1, 2, 3, 4, 5]
    assert receiver.headers[0]["content-type"] == "application/json"
    assert "authorization" not in receiver.headers[0]  # Chat API signs nothing (spec 1.5)


@pytest.mark.anyio
async def test_batches_split_by_kind_and_size(receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        mounts={"https://gw.example": httpx.ASGITransport(app=receiver.app)}
    ) as http:
        fake = FakeChatApi(http=http, webhook_url=HOOK, batch_size=2)
        for i in range(3):
            fake.customer_writes(CUSTOMER, f"m{i}")
        report = await fake.deliver_webhooks()
    assert report.delivered == 2
    assert [len(b["messages"]) for b in receiver.bodies] == [2, 1]


@pytest.mark.anyio
async def test_group_messages_carry_author_and_participant_in_id(fake: FakeChatApi) -> None:
    with pytest.raises(ValueError, match="author"):
        fake.customer_writes("120363000000000001@g.us", "hi all")
    msg_id = fake.customer_writes("120363000000000001@g.us", "hi all", author="79001112233")
    item = fake.history[-1].item
    assert msg_id.endswith("_79001112233@c.us") and item["author"] == "79001112233@c.us"


@pytest.mark.anyio
async def test_phone_typed_messages_arrive_as_from_me_echoes(
    fake: FakeChatApi, receiver: Receiver
) -> None:
    msg_id = fake.phone_writes(CUSTOMER, "typed on the phone")
    await fake.deliver_webhooks()
    item = receiver.bodies[0]["messages"][0]
    assert item["fromMe"] is True and item["id"] == msg_id and msg_id.startswith("true_")
    assert fake.sent == []  # the gateway did not send it


# -- acks ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_acks_sent_delivered_viewed(
    fake: FakeChatApi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    sent = (await api.post("/sendMessage", json={"chatId": CHAT, "body": "order ready"})).json()
    fake.mark_delivered(sent["id"])
    fake.mark_read(sent["id"])
    await fake.deliver_webhooks()

    echo_batch, ack_batch = receiver.bodies
    assert echo_batch["messages"][0]["id"] == sent["id"]
    assert ack_batch == {
        "instanceId": "1101",
        "ack": [
            {"id": sent["id"], "queueNumber": 1, "chatId": CHAT, "status": "sent"},
            {"id": sent["id"], "queueNumber": 1, "chatId": CHAT, "status": "delivered"},
            {"id": sent["id"], "queueNumber": 1, "chatId": CHAT, "status": "viewed"},
        ],
    }
    assert fake.sent[0].acks == ["sent", "delivered", "viewed"]
    with pytest.raises(KeyError):
        fake.mark_read("true_nobody")


@pytest.mark.anyio
async def test_acks_need_ack_notifications_on(receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        mounts={"https://gw.example": httpx.ASGITransport(app=receiver.app)}
    ) as http:
        fake = FakeChatApi(http=http, webhook_url=HOOK, echo_sends=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fake.app), base_url=fake.base_url
        ) as api:
            sent = await api.post(
                "/sendMessage", params={"token": "tok"}, json={"chatId": CHAT, "body": "x"}
            )
        fake.mark_delivered(sent.json()["id"])
        report = await fake.deliver_webhooks()
    assert report.attempts == [] and receiver.bodies == []


# -- retries, gaps, duplicates -------------------------------------------------------------


@pytest.mark.anyio
async def test_guaranteed_hooks_retry_the_same_batch_until_200(
    fake: FakeChatApi, receiver: Receiver
) -> None:
    fake.settings.guaranteedHooks = True
    receiver.script = [500, "timeout", 201]  # 201 is not 200: still a failure (spec 1.6)
    fake.customer_writes(CUSTOMER, "Hello")

    first = await fake.deliver_webhooks()
    assert (first.failed, first.pending, first.attempts[0].status) == (1, 1, 500)
    not_yet = await fake.deliver_webhooks()
    assert not_yet.attempts == []  # the retry is due hook_retry_delay later on the clock

    fake.advance(60)
    second = await fake.deliver_webhooks()
    assert second.attempts[0].status is None and "ReadTimeout" in str(second.attempts[0].error)

    rest = await fake.deliver_until_idle()
    assert [a.status for a in rest.attempts] == [201, 200]
    assert rest.delivered == 1 and rest.pending == 0
    assert [a.attempt for a in fake.webhook_attempts] == [1, 2, 3, 4]
    assert all(b == receiver.bodies[0] for b in receiver.bodies)


@pytest.mark.anyio
async def test_guaranteed_hooks_give_up_after_20_attempts(
    fake: FakeChatApi, receiver: Receiver
) -> None:
    fake.settings.guaranteedHooks = True
    receiver.script = [503] * 25
    fake.customer_writes(CUSTOMER, "Hello")
    report = await fake.deliver_until_idle(max_rounds=30)
    assert len(report.attempts) == 20 and report.dropped == 1 and report.pending == 0
    assert len(fake.hooks.dropped) == 1


@pytest.mark.anyio
async def test_without_guaranteed_hooks_a_failure_is_lost_and_refilled_from_messages(
    fake: FakeChatApi, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    receiver.script = [500]
    for text in ("one", "two", "three"):
        fake.customer_writes(CUSTOMER, text)
    report = await fake.deliver_webhooks()
    assert (report.failed, report.dropped, report.pending) == (1, 1, 0)
    assert (await fake.deliver_until_idle()).attempts == []

    page1 = (await api.get("/messages", params={"lastMessageNumber": 0, "limit": 2})).json()
    assert [m["body"] for m in page1["messages"]] == ["one", "two"]
    assert page1["lastMessageNumber"] == 2
    page2 = (await api.get("/messages", params={"lastMessageNumber": 2})).json()
    assert [m["body"] for m in page2["messages"]] == ["three"] and page2["lastMessageNumber"] == 3
    empty = (await api.get("/messages", params={"lastMessageNumber": 3})).json()
    assert empty == {"messages": [], "lastMessageNumber": 3}
    last = (await api.get("/messages", params={"last": "true", "limit": 1})).json()
    assert [m["body"] for m in last["messages"]] == ["three"]
    by_chat = (await api.get("/messages", params={"chatId": "1@c.us"})).json()
    assert by_chat["messages"] == []


@pytest.mark.anyio
async def test_redeliver_posts_an_identical_duplicate(
    fake: FakeChatApi, receiver: Receiver
) -> None:
    msg_id = fake.customer_writes(CUSTOMER, "Hello")
    await fake.deliver_webhooks()
    assert fake.redeliver(msg_id) == 1
    await fake.deliver_webhooks()
    assert len(receiver.bodies) == 2 and receiver.bodies[0] == receiver.bodies[1]
    with pytest.raises(KeyError):
        fake.redeliver("false_unknown")


@pytest.mark.anyio
async def test_no_webhook_url_drops_pushes(fake: FakeChatApi, receiver: Receiver) -> None:
    fake.settings.webhookUrl = ""
    fake.customer_writes(CUSTOMER, "Hello")
    report = await fake.deliver_webhooks()
    assert report.dropped == 1 and receiver.bodies == [] and len(fake.history) == 1


@pytest.mark.anyio
async def test_webhook_status_endpoint(
    fake: FakeChatApi, receiver: Receiver, api: httpx.AsyncClient
) -> None:
    fake.settings.webhookStatuses = True
    fake.settings.guaranteedHooks = True
    receiver.script = [500]
    msg_id = fake.customer_writes(CUSTOMER, "Hello")
    await fake.deliver_webhooks()
    statuses = (await api.get("/webhookStatus", params={"msgId": msg_id})).json()
    assert [s["status"] for s in statuses] == ["not sent", "queued"]
    await fake.deliver_until_idle()
    statuses = (await api.get("/webhookStatus", params={"msgId": msg_id})).json()
    assert [s["status"] for s in statuses] == ["not sent", "sent"]


# -- account state and QR ------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Walk the chunks checking CRCs, decompress IDAT: a real PNG, not just a header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + chunk)
        if kind == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height = size
    assert len(zlib.decompress(idat)) == height * (1 + (width + 7) // 8)
    return size


def test_qr_png_is_a_valid_deterministic_image() -> None:
    assert png_size(qr_png("a")) == (148, 148)
    assert qr_png("a") == qr_png("a") != qr_png("b")


@pytest.mark.anyio
async def test_status_state_machine_with_qr_code(receiver: Receiver) -> None:
    clock = ManualClock()
    async with httpx.AsyncClient(
        mounts={"https://gw.example": httpx.ASGITransport(app=receiver.app)}
    ) as http:
        fake = FakeChatApi(
            http=http,
            clock=clock,
            state="init",
            webhook_url=HOOK,
            settings={"statusNotificationsOn": True},
            loading_seconds=30,
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fake.app),
            base_url=fake.base_url,
            params={"token": "tok"},
        ) as api:
            asleep = await api.get("/status", params={"no_wakeup": "true"})
            assert asleep.json()["accountStatus"] == "init"
            assert (await api.get("/status")).json()["accountStatus"] == "loading"
            assert (await api.get("/qr_code")).status_code == 404
            clock.advance(30)
            shown = (await api.get("/status")).json()
            assert shown["accountStatus"] == "got qr code"
            assert shown["statusData"]["actions"]["expiry"]["act"] == "expiry"
            prefix = "data:image/png;base64,"
            assert shown["qrCode"].startswith(prefix)
            image = await api.get("/qr_code")
            assert image.headers["content-type"] == "image/png"
            assert image.content == base64.b64decode(shown["qrCode"][len(prefix) :])
            png_size(image.content)

            clock.advance(61)  # a QR code lives about a minute
            assert (await api.get("/qr_code")).content != image.content
            refreshed = (await api.post("/expiry")).json()
            assert refreshed == {"accountStatus": "got qr code"}

            fake.scan_qr()
            assert (await api.get("/status")).json()["accountStatus"] == "authenticated"
            assert (await api.post("/logout")).json() == {"accountStatus": "got qr code"}
            history = (await api.get("/instanceStatuses")).json()["data"]
            recent = [h["status"] for h in history][-3:]
            assert recent == ["got qr code", "authenticated", "got qr code"]

        fake.set_state("authenticated", substatus="phone")
        assert fake.status_json()["statusData"]["actions"]["retry"]["act"] == "retry"
        await fake.deliver_webhooks()
    statuses = [b["accountStatus"] for b in receiver.bodies]
    assert statuses == ["loading", "got qr code", "authenticated", "got qr code", "authenticated"]
    with pytest.raises(ValueError):
        fake.set_state("blocked")


@pytest.mark.anyio
async def test_sends_queue_until_authenticated_and_backlog_replays(
    fake: FakeChatApi, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake.set_state("notAuthorized")
    fake.customer_writes(CUSTOMER, "written while the phone was offline")
    queued = (await api.post("/sendMessage", json={"chatId": CHAT, "body": "later"})).json()
    assert queued["sent"] is True and "queued" in queued["message"]
    listing = (await api.get("/showMessagesQueue")).json()
    assert listing["totalMessages"] == 1 and listing["first100"][0]["id"] == queued["id"]
    with pytest.raises(ValueError, match="queued"):
        fake.mark_delivered(queued["id"])
    assert (await fake.deliver_webhooks()).attempts == []

    fake.scan_qr()
    await fake.deliver_webhooks()
    inbound, echo = receiver.bodies[0]["messages"]
    assert inbound["body"] == "written while the phone was offline"
    assert echo["id"] == queued["id"] and fake.sent[0].status == "sent"
    assert receiver.bodies[1]["ack"][0]["status"] == "sent"


@pytest.mark.anyio
async def test_ignore_old_messages_keeps_backlog_out_of_webhooks(
    fake: FakeChatApi, receiver: Receiver
) -> None:
    fake.settings.ignoreOldMessages = True
    fake.set_state("got qr code")
    fake.customer_writes(CUSTOMER, "old")
    fake.scan_qr()
    await fake.deliver_webhooks()
    assert receiver.bodies == [] and fake.history[0].item["body"] == "old"


@pytest.mark.anyio
async def test_small_instance_and_chat_endpoints(fake: FakeChatApi, api: httpx.AsyncClient) -> None:
    fake.customer_writes(CUSTOMER, "hi", sender_name="Ivan")
    link = await api.post("/sendLink", json={"chatId": CHAT, "body": "https://shop.example"})
    assert link.json()["sent"] is True and fake.sent[0].body == "https://shop.example"
    read = (await api.post("/readChat", json={"phone": CUSTOMER})).json()
    assert read["read"] is True and read["chatId"] == CHAT
    dialogs = (await api.get("/dialogs")).json()["dialogs"]
    assert [(d["id"], d["name"], d["metadata"]["isGroup"]) for d in dialogs] == [
        (CHAT, "Ivan", False)
    ]
    assert (await api.post("/reboot")).json() == {"success": True}

    fake.set_state("authenticated", substatus="computer")
    assert "takeover" in fake.status_json()["statusData"]["actions"]
    assert (await api.post("/takeover")).json() == {"accountStatus": "authenticated"}
    assert fake.substatus == "normal"

    fake.set_state("got qr code")
    await api.post("/sendMessage", json={"chatId": CHAT, "body": "queued"})
    cleared = (await api.post("/clearMessagesQueue")).json()
    assert cleared["cleared"] == 1 and fake.queued() == []
    fake.scan_qr()
    assert fake.sent[-1].status == "cleared"  # never sent after authorisation


# -- error injection and records -----------------------------------------------------------


def test_magic_numbers_are_unlikely_to_collide() -> None:
    assert magic_phone(Magic.NO_ACCOUNT) == "79000990404"
    assert magic_of("79000990404@c.us") is Magic.NO_ACCOUNT
    assert magic_of("79000000000") is None and magic_of(CHAT) is None
    assert to_chat_id("+7 (900) 123-45-67") == CHAT
    ids = IdGen("seed")
    assert re.fullmatch("BAE5[0-9A-F]{16}", ids.hex(20, "BAE5"))


@pytest.mark.anyio
async def test_magic_recipients(fake: FakeChatApi, api: httpx.AsyncClient) -> None:
    def to(magic: Magic) -> dict[str, str]:
        return {"phone": magic_phone(magic), "body": "x"}

    no_account = (await api.post("/sendMessage", json=to(Magic.NO_ACCOUNT))).json()
    assert no_account == {"sent": False, "message": "Recipient is not a WhatsApp user"}
    assert (await api.post("/sendMessage", json=to(Magic.FAILED))).json()["sent"] is False
    eight = await api.post("/sendMessage", json={"phone": "89001234567", "body": "x"})
    assert eight.json()["sent"] is False
    limited = await api.post("/sendMessage", json=to(Magic.RATE_LIMITED))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert (await api.post("/sendMessage", json=to(Magic.SERVER_ERROR))).status_code == 500
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/sendMessage", json=to(Magic.TIMEOUT))
    assert fake.sent == []
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/sendMessage", json=to(Magic.TIMEOUT_AFTER_EFFECT))
    assert len(fake.sent) == 1  # the ambiguous case: it went out, the answer did not come

    fake.settings.ackNotificationsOn = True
    fake.auto_acks = ("sent", "delivered")
    await api.post("/sendMessage", json=to(Magic.NEVER_DELIVERED))
    await api.post("/sendMessage", json={"chatId": CHAT, "body": "fine"})
    assert fake.sent[-2].acks == ["sent"] and fake.sent[-1].acks == ["sent", "delivered"]


@pytest.mark.anyio
async def test_fail_next_injects_http_faults_timeouts_and_disconnects(
    fake: FakeChatApi, api: httpx.AsyncClient
) -> None:
    fake.faults.fail_next("sendMessage", 2, "rate_limit", retry_after=7)
    fake.faults.fail_next("status", 1, "timeout")
    fake.faults.fail_next("*", 1, "disconnect")
    msg = {"chatId": CHAT, "body": "x"}

    first = await api.post("/sendMessage", json=msg)
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert (await api.post("/sendMessage", json=msg)).status_code == 429
    with pytest.raises(httpx.ReadTimeout):
        await api.get("/status")
    with pytest.raises(httpx.RemoteProtocolError):
        await api.get("/settings")
    assert (await api.post("/sendMessage", json=msg)).status_code == 200
    assert len(fake.sent) == 1

    fake.faults.fail_next("sendMessage", None, "server_error")
    assert (await api.post("/sendMessage", json=msg)).status_code == 500
    assert (await api.post("/sendMessage", json=msg)).status_code == 500
    fake.faults.clear()
    assert (await api.post("/sendMessage", json=msg)).status_code == 200

    fake.faults.fail_next("sendMessage", 1, "timeout_after_effect")
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/sendMessage", json=msg)
    assert len(fake.sent) == 3

    faults = [(c.method, c.status, c.fault) for c in fake.calls]
    assert faults[:4] == [
        ("sendMessage", 429, "rate_limit"),
        ("sendMessage", 429, "rate_limit"),
        ("status", None, "timeout"),
        ("settings", None, "disconnect"),
    ]
    assert faults[-1] == ("sendMessage", None, "timeout_after_effect")


@pytest.mark.anyio
async def test_every_call_is_recorded_without_the_token(
    fake: FakeChatApi, api: httpx.AsyncClient
) -> None:
    await api.post("/sendMessage", json={"chatId": CHAT, "body": "x"})
    await api.get("/status")
    send, status = fake.calls
    assert (send.method, send.http_method, send.status) == ("sendMessage", "POST", 200)
    assert send.params == {"chatId": CHAT, "body": "x"} and send.response["sent"] is True
    assert (status.method, status.http_method, status.params) == ("status", "GET", {})
    assert send.at == 1_700_000_000


@pytest.mark.anyio
async def test_control_api_drives_a_standalone_fake(fake: FakeChatApi, receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.host
    ) as control:
        made = await control.post("/_fake/customer_writes", json={"chat": CUSTOMER, "text": "hi"})
        msg_id = made.json()["result"]
        assert fake.history[0].id == msg_id
        pushed = await control.post("/_fake/deliver_webhooks")
        assert pushed.json()["result"]["delivered"] == 1
        assert (await control.get("/_fake/messages")).json()[0]["body"] == "hi"
        assert (await control.get("/_fake/state")).json()["accountStatus"] == "authenticated"
        assert (await control.post("/_fake/set_state", json={"status": "nope"})).status_code == 400
        assert (await control.post("/_fake/fly")).status_code == 404
    assert receiver.bodies[0]["messages"][0]["id"] == msg_id


def test_standalone_entry_point_has_a_cli() -> None:
    from gateway_fakes.chatapi.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
