"""Chat ids, send planning and error mapping: the pure parts of sending."""

from __future__ import annotations

import httpx
import pytest
from gateway_greenapi.chats import chat_id_for, phone_of
from gateway_greenapi.errors import response_error, scrub, transport_error
from gateway_greenapi.outbound import file_name, plan

from gateway.errors import AmbiguousError, PermanentError, TemporaryError
from gateway.models import Attachment, Contact, Edit, Location, Message, Sender

OPERATOR = Sender(id="op-1", name="Anna")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("79001234567@c.us", "79001234567@c.us"),
        ("79001234567", "79001234567@c.us"),
        ("+7 (900) 123-45-67", "79001234567@c.us"),
        ("89001234567", "79001234567@c.us"),
        ("8 900 123 45 67", "79001234567@c.us"),
        ("89001234567@c.us", "79001234567@c.us"),
        ("87011234567", "77011234567@c.us"),  # Kazakhstan mobile
        ("84912345678", "84912345678@c.us"),  # Vietnam: a real country code 84
        ("81312345678", "81312345678@c.us"),  # Japan
        ("0049 151 2345 6789", "4915123456789@c.us"),
        ("79001234567@s.whatsapp.net", "79001234567@c.us"),
        ("2519000000001@lid", "2519000000001@lid"),  # not a phone: GREEN decides
    ],
)
def test_chat_ids(given: str, expected: str) -> None:
    assert chat_id_for(given, groups=False) == expected


def test_group_chat_ids_need_groups_enabled() -> None:
    group = "120363025000000001@g.us"
    assert chat_id_for(group, groups=True) == group
    assert chat_id_for("79001234567-1479621234@g.us", groups=True).endswith("@g.us")
    with pytest.raises(PermanentError) as caught:
        chat_id_for(group, groups=False)
    assert caught.value.code == "groups_disabled"


@pytest.mark.parametrize("given", ["status@broadcast", "anna", "", "+7", "12@g.us x"])
def test_unreachable_ids(given: str) -> None:
    with pytest.raises(PermanentError) as caught:
        chat_id_for(given, groups=True)
    assert caught.value.code == "invalid_recipient"


def test_phone_of() -> None:
    assert phone_of("79001234567@c.us") == "79001234567"
    assert phone_of("1203630@g.us") is None
    assert phone_of("2519@lid") is None


def msg(text: str = "", **fields: object) -> Message:
    return Message(conversation_id="c", native_id="n", sender=OPERATOR, text=text, **fields)  # type: ignore[arg-type]


def test_text_with_quote() -> None:
    [part] = plan(msg("hello"), quoted_id="3EB0")
    assert (part.method, part.payload) == (
        "sendMessage",
        {"message": "hello", "quotedMessageId": "3EB0"},
    )


def test_image_takes_the_text_as_caption() -> None:
    image = Attachment(kind="image", url="https://files.test/a/photo.jpg")
    [part] = plan(msg("look", attachments=(image,)), quoted_id="Q")
    assert part.method == "sendFileByUrl"
    assert part.payload == {
        "urlFile": "https://files.test/a/photo.jpg",
        "fileName": "photo.jpg",
        "caption": "look",
        "quotedMessageId": "Q",
    }


def test_document_text_goes_first_and_files_one_per_send() -> None:
    doc = Attachment(kind="document", url="https://files.test/x?id=1", mime_type="application/pdf")
    image = Attachment(kind="image", url="https://files.test/y", filename="y.png", caption="Y")
    parts = plan(msg("invoice", attachments=(doc, image)), quoted_id="Q")
    assert [p.method for p in parts] == ["sendMessage", "sendFileByUrl", "sendFileByUrl"]
    assert parts[0].payload == {"message": "invoice", "quotedMessageId": "Q"}
    assert parts[1].payload == {"urlFile": "https://files.test/x?id=1", "fileName": "x.pdf"}
    assert parts[2].payload["caption"] == "Y"


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        (Attachment(kind="image", url="https://f.test/p/IMG_1.JPG"), "IMG_1.JPG"),
        (Attachment(kind="image", url="https://f.test/blob", mime_type="image/jpeg"), "blob.jpg"),
        (Attachment(kind="voice", url="https://f.test/v", mime_type="audio/ogg"), "v.ogg"),
        (Attachment(kind="voice", url="https://f.test/"), "voice.ogg"),
        (Attachment(kind="document", url="https://f.test/a%20b.docx"), "a b.docx"),
        (Attachment(kind="file", url="https://f.test/x", filename="report"), "report.bin"),
    ],
)
def test_file_names_always_have_an_extension(attachment: Attachment, expected: str) -> None:
    assert file_name(attachment) == expected


def test_location_and_contacts() -> None:
    event = msg(
        "here",
        location=Location(55.7, 37.6, name="Shop", address="Main st"),
        contacts=(Contact("Anna Smith", ("+7 900 111-22-33",)), Contact("Nobody")),
    )
    parts = plan(event)
    assert [p.method for p in parts] == [
        "sendMessage",
        "sendLocation",
        "sendContact",
        "sendMessage",
    ]
    assert parts[1].payload == {
        "latitude": 55.7,
        "longitude": 37.6,
        "nameLocation": "Shop",
        "address": "Main st",
    }
    assert parts[2].payload == {
        "contact": {"phoneContact": 79001112233, "firstName": "Anna", "lastName": "Smith"}
    }
    assert parts[3].payload["message"].startswith("👤 Nobody")


def test_nothing_to_send_and_edits_are_permanent() -> None:
    with pytest.raises(PermanentError) as empty:
        plan(msg("   "))
    assert empty.value.code == "empty_message"
    with pytest.raises(PermanentError):
        plan(Edit(conversation_id="c", native_id="n", text="t"))


# -- errors ----------------------------------------------------------------------------


def response(status: int, body: object = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_rate_limit_and_server_errors_are_temporary() -> None:
    error = response_error(response(429, {"message": "slow down"}, **{"Retry-After": "7"}), "m")
    assert isinstance(error, TemporaryError) and not isinstance(error, AmbiguousError)
    assert (error.code, error.retry_after) == ("429", 7.0)
    error = response_error(response(502), "sendMessage")
    assert isinstance(error, TemporaryError)
    assert error.code == "502"


def test_quota_is_permanent_with_readable_text() -> None:
    body = {
        "invokeStatus": {
            "method": "sendMessage",
            "used": 3,
            "total": 3,
            "status": "QUOTE_EXCEEDED",
            "description": "Monthly quota has been exceeded",
        },
        "correspondentsStatus": {"status": "CORRESPONDENTS_QUOTE_EXCEEDED", "description": "d"},
    }
    error = response_error(response(466, body), "sendMessage")
    assert isinstance(error, PermanentError)
    assert error.code == "quota_exceeded"
    assert "QUOTE_EXCEEDED (3/3) Monthly quota has been exceeded" in error.text
    assert "upgrade the plan" in error.text


def test_bad_token_and_validation_are_permanent_and_secret_free() -> None:
    secret = "fake0green0api0token"
    body = {
        "statusCode": 401,
        "path": f"/waInstance1/sendMessage/{secret}",
        "message": "Unauthorized",
    }
    error = response_error(response(401, body), "sendMessage", [secret])
    assert isinstance(error, PermanentError) and error.code == "unauthorized"
    assert secret not in str(error)
    body = {"statusCode": 400, "message": f"Validation failed. Details: bad {secret} x?token=abc"}
    error = response_error(response(400, body), "sendMessage", [secret])
    assert isinstance(error, PermanentError) and error.code == "400"
    assert "Validation failed" in error.text
    assert secret not in error.text and "abc" not in error.text


def test_transport_errors() -> None:
    request = httpx.Request("POST", "https://api.green-api.test/waInstance1/sendMessage/secret")
    before = transport_error(
        httpx.ConnectError("refused", request=request), "sendMessage", may_duplicate=True
    )
    assert type(before) is TemporaryError
    after = transport_error(
        httpx.ReadTimeout("slow", request=request), "sendMessage", may_duplicate=True
    )
    assert isinstance(after, AmbiguousError)
    read = transport_error(httpx.ReadTimeout("slow"), "getStateInstance", may_duplicate=False)
    assert type(read) is TemporaryError
    assert "secret" not in str(after)


def test_scrub() -> None:
    assert scrub("a TOKEN b", ["TOKEN"]) == "a *** b"
    assert scrub("GET /x?token=abc&y=1") == "GET /x?token=***&y=1"
