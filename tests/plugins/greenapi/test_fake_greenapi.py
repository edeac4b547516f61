"""The fake GREEN-API behaves like spec section 2 says the real one does."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes.greenapi import (
    ALL_NOTIFICATIONS_ON,
    FakeGreenApi,
    Magic,
    ManualClock,
    magic_phone,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOOK = "https://gw.example/hook"
TOKEN = "s3cret"
CUSTOMER = "79001234567"
CHAT = "79001234567@c.us"
INSTANCE = {"idInstance": 1101000001, "wid": "79876543210@c.us", "typeInstance": "whatsapp"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """The gateway's webhook endpoint: records requests, answers from a script."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.script: list[int | str] = []
        self.app = Starlette(routes=[Route("/hook", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        self.auth.append(request.headers.get("authorization"))
        outcome = self.script.pop(0) if self.script else 200
        if outcome == "timeout":
            raise httpx.ReadTimeout("gateway too slow")
        return Response(status_code=int(outcome))

    def types(self) -> list[str]:
        return [str(b["typeWebhook"]) for b in self.bodies]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def http(receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    mounts = {"https://gw.example": httpx.ASGITransport(app=receiver.app)}
    async with httpx.AsyncClient(mounts=mounts) as client:
        yield client


@pytest.fixture
def fake(http: httpx.AsyncClient) -> FakeGreenApi:
    return FakeGreenApi(
        http=http, webhook_url=HOOK, webhook_token=TOKEN, settings=ALL_NOTIFICATIONS_ON
    )


@pytest.fixture
async def api(fake: FakeGreenApi) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url=fake.api_url) as client:
        yield client


def path(fake: FakeGreenApi, method: str, *extra: str | int) -> str:
    return fake.url(method, *extra).removeprefix(fake.api_url)


async def send(api: httpx.AsyncClient, fake: FakeGreenApi, text: str, **extra: Any) -> str:
    resp = await api.post(
        path(fake, "sendMessage"), json={"chatId": CHAT, "message": text, **extra}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["idMessage"])


def bodies(fake: FakeGreenApi, type_webhook: str | None = None) -> list[dict[str, Any]]:
    return [b for b in fake.pending_webhooks if type_webhook in (None, b["typeWebhook"])]


# -- URL layout, auth, settings ------------------------------------------------------------


@pytest.mark.anyio
async def test_url_layout_token_and_case_insensitive_methods(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    assert fake.url("getStateInstance") == (
        "https://api.green-api.test/waInstance1101000001/getStateInstance/fake0green0api0token"
    )
    ok = await api.get(path(fake, "getStateInstance"))
    assert ok.json() == {"stateInstance": "authorized"}
    assert (await api.get(path(fake, "GetStateInstance"))).status_code == 200
    assert (await api.get("/v3" + path(fake, "getStateInstance"))).status_code == 200

    bad = await api.get("/waInstance1101000001/getStateInstance/wrong")
    assert bad.status_code == 401 and bad.json()["statusCode"] == 401
    assert "wrong" not in str(fake.calls[-1].response)
    assert (await api.get(f"/waInstance1/getStateInstance/{fake.api_token}")).status_code == 404
    assert (await api.get(path(fake, "teleport"))).status_code == 404
    assert (await api.get(path(fake, "sendMessage"))).status_code == 405


@pytest.mark.anyio
async def test_settings_are_yes_no_strings_and_set_settings_reboots(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    clock = ManualClock()
    fake = FakeGreenApi(http=http, clock=clock, restart_seconds=300)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.api_url
    ) as api:
        settings = (await api.get(path(fake, "getSettings"))).json()
        assert settings["wid"] == "79876543210@c.us" and settings["webhookUrl"] == ""
        assert settings["incomingWebhook"] == "no"  # real instances start with all off
        assert settings["delaySendMessagesMilliseconds"] == 500

        for wrong in ({"incomingWebhook": True}, {"delaySendMessagesMilliseconds": 100}, {}):
            resp = await api.post(path(fake, "setSettings"), json=wrong)
            assert resp.status_code == 400
            assert resp.json()["message"].startswith("Validation failed. Details:")
            assert {"statusCode", "timestamp", "path", "message"} <= set(resp.json())

        saved = await api.post(
            path(fake, "setSettings"),
            json={"webhookUrl": HOOK, "webhookUrlToken": TOKEN, **ALL_NOTIFICATIONS_ON},
        )
        assert saved.json() == {"saveSettings": True}
        assert fake.settings.webhookUrlToken == TOKEN
        state = await api.get(path(fake, "getStateInstance"))
        assert state.json() == {"stateInstance": "starting"}
        clock.advance(300)
        state = await api.get(path(fake, "getStateInstance"))
        assert state.json() == {"stateInstance": "authorized"}
    await fake.deliver_webhooks()
    assert [b["stateInstance"] for b in receiver.bodies] == ["starting", "authorized"]
    assert receiver.bodies[0] == {
        "typeWebhook": "stateInstanceChanged",
        "instanceData": INSTANCE,
        "timestamp": 1_700_000_000,
        "stateInstance": "starting",
    }


# -- sending -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_message_echo_and_sent_status(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    id_message = await send(api, fake, "Your order #42 is ready")
    assert re.fullmatch("BAE5[0-9A-F]{16}", id_message)
    assert fake.sent[0].id_message == id_message and fake.sent[0].text == "Your order #42 is ready"
    assert fake.sent[0].status == "sent"

    echo, status = fake.pending_webhooks
    assert echo == {
        "typeWebhook": "outgoingAPIMessageReceived",
        "instanceData": INSTANCE,
        "timestamp": 1_700_000_000,
        "idMessage": id_message,
        "senderData": {
            "chatId": CHAT,
            "sender": "79876543210@c.us",
            "chatName": CHAT,
            "senderName": "Shop",
            "senderContactName": "",
        },
        "messageData": {
            "typeMessage": "textMessage",
            "textMessageData": {"textMessage": "Your order #42 is ready"},
        },
    }
    assert status == {
        "typeWebhook": "outgoingMessageStatus",
        "chatId": CHAT,
        "instanceData": INSTANCE,
        "timestamp": 1_700_000_000,
        "idMessage": id_message,
        "status": "sent",
        "sendByApi": True,
    }
    assert FakeGreenApi().ids.hex(20, "BAE5") == id_message  # deterministic


@pytest.mark.anyio
async def test_send_validation_errors(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    cases = [
        {"chatId": "79001234567", "message": "x"},
        {"chatId": CHAT},
        {"chatId": CHAT, "message": "x" * 20_001},
    ]
    for body in cases:
        resp = await api.post(path(fake, "sendMessage"), json=body)
        assert resp.status_code == 400
        error = resp.json()
        assert error["statusCode"] == 400 and error["path"].endswith("/{{apiTokenInstance}}")
        assert error["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert fake.sent == []


@pytest.mark.anyio
async def test_files_location_and_contact(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    by_url = await api.post(
        path(fake, "sendFileByUrl"),
        json={
            "chatId": CHAT,
            "urlFile": "https://files.example.com/invoice-42.pdf",
            "fileName": "invoice-42.pdf",
            "caption": "Invoice",
        },
    )
    assert set(by_url.json()) == {"idMessage"}
    no_ext = await api.post(
        path(fake, "sendFileByUrl"),
        json={"chatId": CHAT, "urlFile": "https://files.example.com/x", "fileName": "x"},
    )
    assert no_ext.status_code == 400

    upload = await api.post(
        path(fake, "sendFileByUpload"),
        data={"chatId": CHAT, "caption": "photo"},
        files={"file": ("shot.png", b"\x89PNG fake", "image/png")},
    )
    url_file = upload.json()["urlFile"]
    assert set(upload.json()) == {"idMessage", "urlFile"}
    assert (await api.get(url_file)).content == b"\x89PNG fake"
    raw = await api.post(
        path(fake, "uploadFile"), content=b"%PDF-1.4", headers={"Content-Type": "application/pdf"}
    )
    assert raw.json()["urlFile"].endswith(".pdf")
    assert (await api.get(raw.json()["urlFile"])).content == b"%PDF-1.4"

    await api.post(
        path(fake, "sendLocation"),
        json={"chatId": CHAT, "latitude": 55.75, "longitude": 37.61, "nameLocation": "Shop"},
    )
    await api.post(
        path(fake, "sendContact"),
        json={"chatId": CHAT, "contact": {"phoneContact": 79005554433, "firstName": "Anna"}},
    )
    bad_contact = await api.post(
        path(fake, "sendContact"), json={"chatId": CHAT, "contact": {"phoneContact": "x"}}
    )
    assert bad_contact.status_code == 400

    doc, image, location, contact = (s.message_data for s in fake.sent)
    assert doc["typeMessage"] == "documentMessage"
    assert doc["fileMessageData"] == {
        "downloadUrl": "https://files.example.com/invoice-42.pdf",
        "caption": "Invoice",
        "fileName": "invoice-42.pdf",
        "jpegThumbnail": "",
        "mimeType": "application/pdf",
        "forwardingScore": 0,
        "isForwarded": False,
    }
    assert image["typeMessage"] == "imageMessage" and fake.sent[1].url_file == url_file
    assert location["locationMessageData"]["nameLocation"] == "Shop"
    assert contact["contactMessageData"]["displayName"] == "Anna"
    assert "waid=79005554433" in contact["contactMessageData"]["vcard"]
    assert (await api.post(path(fake, "readChat"), json={"chatId": CHAT})).json() == {
        "setRead": True
    }


@pytest.mark.anyio
async def test_quotes_in_new_and_legacy_shapes(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    question = await send(api, fake, "Which size?")
    reply = fake.customer_writes(CUSTOMER, "Yes, this one", quoted=question, sender_name="Ivan")
    legacy = fake.customer_writes(CUSTOMER, "M please", quoted=question, legacy_quote=True)
    photo = fake.customer_writes(CUSTOMER, "like this", kind="image", quoted=reply)
    answer = await send(api, fake, "OK", quotedMessageId=photo)

    data = {b["idMessage"]: b["messageData"] for b in bodies(fake) if "messageData" in b}
    assert data[reply] == {
        "typeMessage": "extendedTextMessage",
        "extendedTextMessageData": {
            "text": "Yes, this one",
            "stanzaId": question,
            "participant": "79876543210@c.us",
        },
        "quotedMessage": {
            "stanzaId": question,
            "participant": "79876543210@c.us",
            "typeMessage": "textMessage",
            "textMessage": "Which size?",
        },
    }
    assert data[legacy]["typeMessage"] == "quotedMessage"
    assert data[legacy]["quotedMessage"]["textMessage"] == "Which size?"
    assert data[photo]["typeMessage"] == "imageMessage"
    assert data[photo]["quotedMessage"]["participant"] == CHAT
    assert data[photo]["quotedMessage"]["typeMessage"] == "extendedTextMessage"
    quoted_photo = data[answer]["quotedMessage"]
    assert quoted_photo["typeMessage"] == "imageMessage" and quoted_photo["caption"] == "like this"
    assert fake.sent[-1].quoted_message_id == photo


# -- incoming message types ----------------------------------------------------------------


@pytest.mark.anyio
async def test_incoming_text_has_the_spec_shape(fake: FakeGreenApi) -> None:
    id_message = fake.customer_writes(
        CUSTOMER, "Hello, is the shop open?", sender_name="Ivan", sender_contact_name="Ivan P."
    )
    assert re.fullmatch("[0-9A-F]{32}", id_message)
    assert fake.pending_webhooks == [
        {
            "typeWebhook": "incomingMessageReceived",
            "instanceData": INSTANCE,
            "timestamp": 1_700_000_000,
            "idMessage": id_message,
            "senderData": {
                "chatId": CHAT,
                "sender": CHAT,
                "chatName": "Ivan",
                "senderName": "Ivan",
                "senderContactName": "Ivan P.",
            },
            "messageData": {
                "typeMessage": "textMessage",
                "textMessageData": {"textMessage": "Hello, is the shop open?"},
            },
        }
    ]


@pytest.mark.anyio
async def test_every_incoming_message_type(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    ours = await send(api, fake, "Pick one")
    write = fake.customer_writes
    made = {
        "extendedText": write(CUSTOMER, "see https://x.example", kind="extendedText", title="X"),
        "image": write(CUSTOMER, kind="image", caption="receipt"),
        "video": write(CUSTOMER, kind="video"),
        "document": write(CUSTOMER, kind="document", file_name="price-list.pdf"),
        "audio": write(CUSTOMER, kind="audio"),
        "sticker": write(CUSTOMER, kind="sticker"),
        "location": write(CUSTOMER, kind="location", location=(1.5, 2.5), address="Main st"),
        "contact": write(CUSTOMER, kind="contact", contacts=[("Viktor A", "79001234569")]),
        "contacts": write(CUSTOMER, kind="contacts", contacts=[("A B", "1"), ("C D", "2")]),
        "reaction": write(CUSTOMER, "👍", kind="reaction", target=ours),
        "edited": write(CUSTOMER, "New text", kind="edited", target="BAE5AFC355030F7A"),
        "deleted": write(CUSTOMER, kind="deleted", target="BAE5AFC355030F7A"),
        "poll": write(CUSTOMER, "Size?", kind="poll", options=["S", "M"]),
        "pollUpdate": write(
            CUSTOMER, "Size?", kind="pollUpdate", target=ours, votes={"S": [CHAT], "M": []}
        ),
        "buttonsResponse": write(
            CUSTOMER, "Green", kind="buttonsResponse", target=ours, selected_id="1"
        ),
        "templateButtonsReply": write(
            CUSTOMER,
            "red",
            kind="templateButtonsReply",
            target=ours,
            selected_id="id1",
            selected_index=2,
        ),
        "listResponse": write(
            CUSTOMER, "Option 2", kind="listResponse", target=ours, selected_id="o2"
        ),
        "raw": write(
            CUSTOMER,
            kind="raw",
            message_data={"typeMessage": "groupInviteMessage", "groupInviteMessageData": {}},
        ),
    }
    data = {b["idMessage"]: b["messageData"] for b in bodies(fake, "incomingMessageReceived")}
    got = {kind: data[id_message] for kind, id_message in made.items()}

    assert got["extendedText"]["extendedTextMessageData"]["title"] == "X"
    image = got["image"]["fileMessageData"]
    assert got["image"]["typeMessage"] == "imageMessage" and image["caption"] == "receipt"
    assert (await api.get(image["downloadUrl"])).content.startswith(b"\x89PNG")
    assert got["video"]["typeMessage"] == "videoMessage"
    document = got["document"]["fileMessageData"]
    assert (document["fileName"], document["mimeType"]) == ("price-list.pdf", "application/pdf")
    assert (await api.get(document["downloadUrl"])).content.startswith(b"%PDF")
    assert got["audio"]["fileMessageData"]["mimeType"] == "audio/ogg"
    assert got["sticker"]["fileMessageData"]["isAnimated"] is False
    location = got["location"]["locationMessageData"]
    assert (location["latitude"], location["longitude"], location["address"]) == (
        1.5,
        2.5,
        "Main st",
    )
    assert got["contact"]["contactMessageData"]["displayName"] == "Viktor A"
    # GREEN's own example nests the array one level deeper, under messageData again.
    assert [c["displayName"] for c in got["contacts"]["messageData"]["contacts"]] == ["A B", "C D"]
    assert got["reaction"] == {
        "typeMessage": "reactionMessage",
        "extendedTextMessageData": {"text": "👍"},
        "quotedMessage": {"stanzaId": ours, "participant": "79876543210@c.us"},
    }
    assert got["edited"]["editedMessageData"] == {
        "textMessage": "New text",
        "stanzaId": "BAE5AFC355030F7A",
    }
    assert got["deleted"]["deletedMessageData"] == {"stanzaId": "BAE5AFC355030F7A"}
    assert got["poll"]["pollMessageData"]["options"] == [{"optionName": "S"}, {"optionName": "M"}]
    assert got["pollUpdate"]["pollMessageData"]["votes"][0] == {
        "optionName": "S",
        "optionVoters": [CHAT],
    }
    assert got["buttonsResponse"]["buttonsResponseMessage"] == {
        "stanzaId": ours,
        "selectedButtonId": "1",
        "selectedButtonText": "Green",
    }
    assert got["templateButtonsReply"]["templateButtonReplyMessage"]["selectedIndex"] == 2
    assert got["listResponse"]["listResponseMessage"]["singleSelectReply"] == "o2"
    assert got["raw"]["typeMessage"] == "groupInviteMessage"

    with pytest.raises(ValueError, match="target"):
        fake.customer_writes(CUSTOMER, "👍", kind="reaction")
    with pytest.raises(ValueError, match="sender"):
        fake.customer_writes("120363000000000001@g.us", "hi")
    group = fake.customer_writes("120363000000000001@g.us", "hi", sender=CUSTOMER)
    assert bodies(fake)[-1]["idMessage"] == group
    assert bodies(fake)[-1]["senderData"]["sender"] == CHAT


@pytest.mark.anyio
async def test_settings_switch_notifications_off(http: httpx.AsyncClient) -> None:
    fake = FakeGreenApi(http=http, webhook_url=HOOK, settings={"incomingWebhook": "yes"})
    fake.customer_writes(CUSTOMER, "hi")
    fake.customer_writes(CUSTOMER, "edit", kind="edited", target="X")  # needs editedMessageWebhook
    fake.set_state("notAuthorized")  # needs stateWebhook
    assert [b["typeWebhook"] for b in fake.pending_webhooks] == ["incomingMessageReceived"]
    assert [b["typeWebhook"] for b in fake.suppressed] == [
        "incomingMessageReceived",
        "stateInstanceChanged",
    ]


# -- webhook delivery ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_fifo_head_of_line_retry_with_bearer_token(
    fake: FakeGreenApi, receiver: Receiver
) -> None:
    receiver.script = [500]
    ids = [fake.customer_writes(CUSTOMER, text) for text in ("one", "two", "three")]

    first = await fake.deliver_webhooks()
    assert (len(first.attempts), first.failed, first.pending) == (1, 1, 3)
    assert (await fake.deliver_webhooks()).attempts == []  # paused 60 s on the clock
    fake.advance(59)
    assert (await fake.deliver_webhooks()).attempts == []
    fake.advance(1)
    second = await fake.deliver_webhooks()
    assert second.delivered == 3 and second.pending == 0
    assert [b["idMessage"] for b in receiver.bodies] == [ids[0], ids[0], ids[1], ids[2]]
    assert set(receiver.auth) == {"Bearer s3cret"}
    assert [n.attempts for n in fake.notifications.delivered] == [2, 1, 1]


@pytest.mark.anyio
async def test_deliver_until_idle_compresses_the_pauses(
    fake: FakeGreenApi, receiver: Receiver
) -> None:
    receiver.script = ["timeout", 502, 201]
    fake.customer_writes(CUSTOMER, "hello")
    report = await fake.deliver_until_idle()
    assert [a.status for a in report.attempts] == [None, 502, 201, 200]
    assert "ReadTimeout" in str(report.attempts[0].error)
    assert fake.clock() == 1_700_000_000 + 3 * 60
    # The gateway saw the same notification four times: it must dedupe on idMessage.
    assert len({str(b) for b in receiver.bodies}) == 1


@pytest.mark.anyio
async def test_raw_token_style_and_no_token(http: httpx.AsyncClient, receiver: Receiver) -> None:
    raw = FakeGreenApi(
        http=http,
        webhook_url=HOOK,
        webhook_token="t",
        auth_style="raw",
        settings=ALL_NOTIFICATIONS_ON,
    )
    raw.customer_writes(CUSTOMER, "a")
    await raw.deliver_webhooks()
    bare = FakeGreenApi(http=http, webhook_url=HOOK, settings=ALL_NOTIFICATIONS_ON)
    bare.customer_writes(CUSTOMER, "b")
    await bare.deliver_webhooks()
    assert receiver.auth == ["t", None]


@pytest.mark.anyio
async def test_redeliver_and_24h_expiry(fake: FakeGreenApi, receiver: Receiver) -> None:
    id_message = fake.customer_writes(CUSTOMER, "hello")
    await fake.deliver_webhooks()
    receipt = fake.redeliver(id_message)
    assert receipt == 2
    await fake.deliver_webhooks()
    assert receiver.bodies[0] == receiver.bodies[1]
    with pytest.raises(KeyError):
        fake.redeliver("nope")

    receiver.script = [500]
    fake.customer_writes(CUSTOMER, "stuck")
    await fake.deliver_webhooks()
    fake.advance(86_401)
    report = await fake.deliver_webhooks()
    assert report.dropped == 1 and report.attempts == [] and report.pending == 0
    assert len(fake.notifications.expired) == 1


# -- polling -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_polling_shares_the_queue(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    assert (await api.get(path(fake, "receiveNotification"))).status_code == 400  # webhook mode
    fake.settings.webhookUrl = ""
    first = fake.customer_writes(CUSTOMER, "one")
    second = fake.customer_writes(CUSTOMER, "two")
    assert (await fake.deliver_webhooks()).pending == 2  # nobody to push to: they wait

    receive = path(fake, "receiveNotification")
    head = (await api.get(receive, params={"receiveTimeout": 5})).json()
    assert head["receiptId"] == 1 and head["body"]["idMessage"] == first
    assert (await api.get(receive)).json() == head  # not deleted -> same again
    assert (await api.get(receive, params={"receiveTimeout": 61})).status_code == 400

    deleted = await api.delete(path(fake, "deleteNotification", head["receiptId"]))
    assert deleted.json() == {"result": True}
    again = await api.delete(path(fake, "deleteNotification", head["receiptId"]))
    assert again.json() == {"result": False}
    nxt = (await api.get(receive)).json()
    assert nxt["receiptId"] == 2 and nxt["body"]["idMessage"] == second
    await api.delete(path(fake, "deleteNotification", 2))
    empty = await api.get(receive)
    assert empty.status_code == 200 and empty.json() is None
    assert (await api.delete(path(fake, "deleteNotification"))).status_code == 404


@pytest.mark.anyio
async def test_clear_webhooks_queue_once_a_minute(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    fake.customer_writes(CUSTOMER, "x")
    first = await api.delete(path(fake, "clearWebhooksQueue"))
    assert first.json() == {"isCleared": True, "reason": ""} and fake.pending_webhooks == []
    second = (await api.delete(path(fake, "clearWebhooksQueue"))).json()
    assert second["isCleared"] is False and second["reason"] == "Too many requests"
    fake.advance(60)
    assert (await api.delete(path(fake, "clearWebhooksQueue"))).json()["isCleared"] is True


# -- statuses and magic numbers ------------------------------------------------------------


@pytest.mark.anyio
async def test_status_sequence_and_failure_description(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    id_message = await send(api, fake, "hi")
    fake.mark_delivered(id_message)
    fake.mark_read(id_message)
    other = await send(api, fake, "lost")
    fake.mark_failed(other, "SWE001: fake")
    statuses = [
        (b["idMessage"], b["status"], b.get("description"))
        for b in bodies(fake, "outgoingMessageStatus")
    ]
    assert statuses == [
        (id_message, "sent", None),
        (id_message, "delivered", None),
        (id_message, "read", None),
        (other, "sent", None),
        (other, "failed", "SWE001: fake"),
    ]
    assert fake.sent[0].statuses == ["sent", "delivered", "read"]
    with pytest.raises(ValueError):
        fake.emit_status(id_message, "played")


@pytest.mark.anyio
async def test_magic_recipients(http: httpx.AsyncClient) -> None:
    fake = FakeGreenApi(http=http, settings={"outgoingAPIMessageWebhook": "yes"})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.api_url
    ) as api:

        async def to(magic: Magic) -> httpx.Response:
            chat = magic_phone(magic) + "@c.us"
            return await api.post(path(fake, "sendMessage"), json={"chatId": chat, "message": "x"})

        no_account = (await to(Magic.NO_ACCOUNT)).json()["idMessage"]
        failed = (await to(Magic.FAILED)).json()["idMessage"]
        limited = await to(Magic.RATE_LIMITED)
        assert limited.status_code == 429 and limited.json()["statusCode"] == 429
        assert (await to(Magic.SERVER_ERROR)).status_code == 500
        quota = await to(Magic.QUOTA)
        assert quota.status_code == 466
        assert quota.json()["invokeStatus"]["status"] == "QUOTE_EXCEEDED"
        with pytest.raises(httpx.ReadTimeout):
            await to(Magic.TIMEOUT)
        with pytest.raises(httpx.ReadTimeout):
            await to(Magic.TIMEOUT_AFTER_EFFECT)
        exists = await api.post(path(fake, "checkWhatsapp"), json={"phoneNumber": 79000990404})
        assert exists.json() == {"existsWhatsapp": False}

        # outgoingWebhook is "no", yet noAccount and failed still arrive (spec 2.3).
        statuses = [(b["idMessage"], b["status"]) for b in bodies(fake, "outgoingMessageStatus")]
        assert statuses == [(no_account, "noAccount"), (failed, "failed")]
        assert len(fake.sent) == 3  # noAccount, failed, and the one whose answer timed out
        assert "description" in bodies(fake, "outgoingMessageStatus")[1]

        fake.settings.update(ALL_NOTIFICATIONS_ON)
        await to(Magic.YELLOW_CARD)
        assert fake.state == "yellowCard"
        held = (
            await api.post(path(fake, "sendMessage"), json={"chatId": CHAT, "message": "y"})
        ).json()
        assert fake.sent[-1].status == "queued"
        assert (await api.get(path(fake, "reboot"))).json() == {"isReboot": True}
        await api.get(path(fake, "getStateInstance"))
        assert fake.state == "authorized" and fake.sent[-1].status == "sent"
    kinds = [
        (b["typeWebhook"], b.get("status") or b.get("stateInstance")) for b in bodies(fake)[-6:]
    ]
    assert kinds == [
        ("outgoingMessageStatus", "yellowCard"),
        ("stateInstanceChanged", "yellowCard"),
        ("stateInstanceChanged", "starting"),
        ("stateInstanceChanged", "authorized"),
        ("outgoingAPIMessageReceived", None),
        ("outgoingMessageStatus", "sent"),
    ]
    assert bodies(fake)[-1]["idMessage"] == held["idMessage"]


@pytest.mark.anyio
async def test_auto_statuses_and_never_delivered(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    fake.auto_statuses = ("delivered", "read")
    await send(api, fake, "a")
    await api.post(
        path(fake, "sendMessage"),
        json={"chatId": magic_phone(Magic.NEVER_DELIVERED) + "@c.us", "message": "b"},
    )
    assert [s.statuses for s in fake.sent] == [["sent", "delivered", "read"], ["sent"]]


@pytest.mark.anyio
async def test_fail_next_and_call_records(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    fake.faults.fail_next("sendmessage", 1, "rate_limit", retry_after=2)
    fake.faults.fail_next("getStateInstance", 1, "quota")
    fake.faults.fail_next("qr", 1, "timeout")
    limited = await api.post(path(fake, "sendMessage"), json={"chatId": CHAT, "message": "x"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert (await api.get(path(fake, "getStateInstance"))).status_code == 466
    with pytest.raises(httpx.ReadTimeout):
        await api.get(path(fake, "qr"))
    await send(api, fake, "x")
    records = [(c.method, c.http_method, c.status, c.fault) for c in fake.calls]
    assert records == [
        ("sendMessage", "POST", 429, "rate_limit"),
        ("getStateInstance", "GET", 466, "quota"),
        ("qr", "GET", None, "timeout"),
        ("sendMessage", "POST", 200, None),
    ]
    assert fake.calls[-1].params == {"chatId": CHAT, "message": "x"}
    assert fake.calls[-1].response == {"idMessage": fake.sent[0].id_message}


# -- account state -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_machine_and_qr(fake: FakeGreenApi, api: httpx.AsyncClient) -> None:
    qr = path(fake, "qr")
    assert (await api.get(qr)).json()["type"] == "alreadyLogged"
    assert (await api.get(path(fake, "logout"))).json() == {"isLogout": True}
    shown = (await api.get(qr)).json()
    assert shown["type"] == "qrCode"
    png = base64.b64decode(shown["message"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    fake.advance(20)  # GREEN refreshes the QR every 20 s
    assert (await api.get(qr)).json()["message"] != shown["message"]

    fake.scan_qr()
    assert (await api.get(path(fake, "getStateInstance"))).json()["stateInstance"] == "authorized"
    fake.set_state("blocked")
    assert (await api.get(qr)).json()["type"] == "error"
    with pytest.raises(ValueError):
        fake.set_state("asleep")
    changes = [(b["stateInstance"], b["instanceData"]["wid"]) for b in bodies(fake)]
    assert changes == [
        ("notAuthorized", ""),
        ("authorized", "79876543210@c.us"),
        ("blocked", "79876543210@c.us"),
    ]


@pytest.mark.anyio
async def test_blocked_to_not_authorized_bug_knob(http: httpx.AsyncClient) -> None:
    fake = FakeGreenApi(http=http, state="blocked", blocked_bug=True, settings=ALL_NOTIFICATIONS_ON)
    fake.set_state("notAuthorized")
    assert fake.pending_webhooks == [] and fake.state == "notAuthorized"


@pytest.mark.anyio
async def test_sends_and_messages_wait_for_authorization(
    fake: FakeGreenApi, api: httpx.AsyncClient
) -> None:
    fake.set_state("notAuthorized")
    waiting = fake.customer_writes(CUSTOMER, "while unlinked")
    queued = await send(api, fake, "later")
    assert fake.sent[0].status == "queued"
    with pytest.raises(ValueError, match="queued"):
        fake.mark_delivered(queued)
    assert [b["typeWebhook"] for b in bodies(fake)] == ["stateInstanceChanged"]
    fake.scan_qr()
    order = [(b["typeWebhook"], b.get("idMessage")) for b in bodies(fake)][1:]
    assert order == [
        ("stateInstanceChanged", None),
        ("incomingMessageReceived", waiting),
        ("outgoingAPIMessageReceived", queued),
        ("outgoingMessageStatus", queued),
    ]


@pytest.mark.anyio
async def test_send_delay_paces_the_queue(http: httpx.AsyncClient) -> None:
    fake = FakeGreenApi(http=http, emulate_send_delay=True, settings=ALL_NOTIFICATIONS_ON)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.api_url
    ) as api:
        await send(api, fake, "a")
        await send(api, fake, "b")
        assert [s.status for s in fake.sent] == ["sent", "queued"]
        fake.advance(0.5)  # delaySendMessagesMilliseconds = 500
        assert [s.status for s in fake.sent] == ["sent", "sent"]


@pytest.mark.anyio
async def test_phone_typed_messages_calls_and_quota(fake: FakeGreenApi) -> None:
    typed = fake.phone_writes(CUSTOMER, "typed on the phone")
    fake.emit_status(typed, "delivered")
    fake.customer_calls(CUSTOMER)
    fake.quota_exceeded()
    echo, status, call, quota = fake.pending_webhooks
    assert echo["typeWebhook"] == "outgoingMessageReceived" and echo["idMessage"] == typed
    assert echo["senderData"]["sender"] == "79876543210@c.us"
    assert status["sendByApi"] is False and fake.sent == []
    assert (call["typeWebhook"], call["from"], call["status"]) == ("incomingCall", CHAT, "offer")
    assert quota["quotaData"]["status"] == "CORRESPONDENTS_QUOTA_EXCEEDED"


@pytest.mark.anyio
async def test_control_api(fake: FakeGreenApi, receiver: Receiver) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url=fake.api_url
    ) as control:
        made = await control.post(
            "/_fake/customer_writes",
            json={"chat": CUSTOMER, "text": "hi", "kind": "location", "location": [1, 2]},
        )
        assert (await control.post("/_fake/deliver_webhooks")).json()["result"]["delivered"] == 1
        assert (await control.get("/_fake/state")).json()["stateInstance"] == "authorized"
    assert receiver.bodies[0]["idMessage"] == made.json()["result"]


def test_standalone_entry_point_has_a_cli() -> None:
    from gateway_fakes.greenapi.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
