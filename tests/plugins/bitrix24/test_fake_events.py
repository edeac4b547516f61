"""Event emission, operator simulation, install/placement/uninstall of the fake portal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal, php_form_decode, php_form_encode
from gateway_fakes.bitrix24.__main__ import build, standalone_app
from gateway_fakes.bitrix24.testing import ManualClock, Recorder

EVENTS = "https://gw.example.com/b24/events"
CONNECTOR = {
    "ID": "acme_wa",
    "NAME": "Acme WhatsApp",
    "ICON": {"DATA_IMAGE": "data:image/svg+xml;base64,PHN2Zy8+"},
    "PLACEMENT_HANDLER": "https://gw.example.com/b24/settings",
}
CLIENT = {
    "user": {"id": "15557654321", "name": "Ivan"},
    "message": {"id": "wamid.IN", "text": "Hello"},
    "chat": {"id": "15557654321"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gateway() -> Recorder:
    return Recorder()


@pytest.fixture
async def portal(gateway: Recorder) -> AsyncIterator[FakePortal]:
    async with gateway.client() as http:
        yield FakePortal(clock=ManualClock(), epoch=1773759161.0 - 1000.0, rate=None, http=http)


@pytest.fixture
async def rest(portal: FakePortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=portal.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://acme.bitrix24.com"
    ) as client:
        yield client


async def call(rest: httpx.AsyncClient, portal: FakePortal, method: str, **params: Any) -> Any:
    token = portal.issue_tokens().access_token
    reply = await rest.post(f"/rest/{method}", json={**params, "auth": token})
    return reply.json()


async def connected(rest: httpx.AsyncClient, portal: FakePortal, **flags: Any) -> None:
    """Register, bind the connector events, activate line 1, let a client write."""
    await call(rest, portal, "imconnector.register", **CONNECTOR, **flags)
    for event in ("MessageAdd", "MessageUpdate", "MessageDelete", "DialogStart",
                  "DialogFinish", "StatusDelete", "LineDelete"):  # fmt: skip
        await call(rest, portal, "event.bind", event=f"OnImConnector{event}", handler=EVENTS)
    await call(rest, portal, "event.bind", event="OnAppUninstall", handler=EVENTS)
    await call(rest, portal, "imconnector.activate", CONNECTOR="acme_wa", LINE=1, ACTIVE=1)
    await call(
        rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    portal.pending.clear()


def refresh_query(portal: FakePortal, refresh_token: str) -> dict[str, str]:
    return {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": refresh_token,
    }


def test_php_form_encode_and_decode_round_trip() -> None:
    data = {
        "event": "X",
        "data": {"MESSAGES": [{"im": {"chat_id": 1807}, "flag": True, "off": False}]},
        "skip": None,
        "empty": [],
    }
    pairs = php_form_encode(data)
    assert pairs == [
        ("event", "X"),
        ("data[MESSAGES][0][im][chat_id]", "1807"),
        ("data[MESSAGES][0][flag]", "1"),
        ("data[MESSAGES][0][off]", "0"),
    ]
    assert php_form_decode(pairs) == {
        "event": "X",
        "data": {"MESSAGES": [{"im": {"chat_id": "1807"}, "flag": "1", "off": "0"}]},
    }
    assert php_form_decode([("a[]", "x"), ("a[]", "y"), ("b[k][]", "z")]) == {
        "a": ["x", "y"],
        "b": {"k": ["z"]},
    }


@pytest.mark.anyio
async def test_operator_message_event_matches_the_spec_transcript(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    pdf = {"name": "price.pdf", "content": b"%PDF-1.4 fake", "mime": "application/pdf"}
    emission = await portal.operator_writes(
        1, "15557654321", "Hello! See attachment", files=[pdf], operator_name="Klaus Weber"
    )
    assert [d.status for d in emission.deliveries] == [200]
    posted = gateway.received[-1]
    assert posted.url == EVENTS
    assert posted.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = dict(posted.pairs)
    message = emission.message
    assert message is not None
    assert fields["event"] == "ONIMCONNECTORMESSAGEADD"
    assert fields["event_handler_id"] == "555"
    assert fields["data[CONNECTOR]"] == "acme_wa" and fields["data[LINE]"] == "1"
    assert fields["data[MESSAGES][0][im][chat_id]"] == str(message.bitrix_chat_id)
    assert fields["data[MESSAGES][0][im][message_id]"] == str(message.im_message_id)
    assert fields["data[MESSAGES][0][message][user_id]"] == "27"
    assert fields["data[MESSAGES][0][message][text]"] == (
        "[b]Klaus Weber:[/b][br] Hello! See attachment"
    )
    assert fields["data[MESSAGES][0][message][files][0][name]"] == "price.pdf"
    assert fields["data[MESSAGES][0][message][files][0][type]"] == "file"
    assert fields["data[MESSAGES][0][message][files][0][size]"] == "13"
    assert fields["data[MESSAGES][0][chat][id]"] == "15557654321"
    assert fields["ts"] == "1773759161"
    auth_keys = [k for k, _ in posted.pairs if k.startswith("auth[")]
    assert auth_keys == [
        f"auth[{k}]"
        for k in ("access_token", "expires", "expires_in", "scope", "domain", "server_endpoint",
                  "status", "client_endpoint", "member_id", "user_id", "application_token")
    ]  # fmt: skip
    assert fields["auth[application_token]"] == portal.application_token
    assert fields["auth[member_id]"] == portal.member_id
    assert fields["auth[user_id]"] == "27"
    assert fields["auth[client_endpoint]"] == "https://acme.bitrix24.com/rest/"

    # Both file link styles download from the portal itself.
    link = fields["data[MESSAGES][0][message][files][0][link]"]
    relative = fields["data[MESSAGES][0][message][files][0][downloadLink]"]
    assert link.startswith("https://acme.bitrix24.com/~") and relative.startswith("/rest/download")
    assert (await rest.get(link)).content == b"%PDF-1.4 fake"
    assert (await rest.get(relative)).content == b"%PDF-1.4 fake"
    assert (await rest.get("/~nope")).status_code == 404

    # The event token is a working REST token of the operator.
    me = await rest.post("/rest/app.info", json={"auth": fields["auth[access_token]"]})
    assert me.status_code == 200
    assert [m.author for m in portal.messages(line=1, chat_id="15557654321")] == [
        "client",
        "operator",
    ]


@pytest.mark.anyio
async def test_signature_images_and_file_styles(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal, NEED_SIGNATURE=False)
    portal.file_style = "link"
    plain = await portal.operator_writes(1, "15557654321", "No prefix", files=["cat.jpg"])
    item = plain.data["MESSAGES"][0]["message"]
    assert item["text"] == "No prefix"
    assert item["files"][0]["type"] == "image" and item["files"][0]["link"].endswith("#img.jpg")
    assert "downloadLink" not in item["files"][0]
    portal.state.connectors["acme_wa"].need_signature = True
    portal.file_style = "downloadLink"
    only_file = await portal.operator_writes(1, "15557654321", "", files=["a.pdf"])
    assert only_file.data["MESSAGES"][0]["message"]["text"] == "[b]Anna:[/b]"
    assert "link" not in only_file.data["MESSAGES"][0]["message"]["files"][0]
    unsigned = await portal.operator_writes(1, "15557654321", "raw", signature=False)
    assert unsigned.data["MESSAGES"][0]["message"]["text"] == "raw"
    with pytest.raises(LookupError, match="a client must write first"):
        await portal.operator_writes(1, "nobody", "hi")


@pytest.mark.anyio
async def test_no_event_when_line_is_down_or_install_unfinished(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    portal.installed_finished = False
    assert (await portal.operator_writes(1, "15557654321", "x")).deliveries == []
    portal.finish_install()
    await call(rest, portal, "imconnector.set.error", CONNECTOR="acme_wa", LINE=1)
    down = await portal.operator_writes(1, "15557654321", "y")
    assert down.deliveries == [] and down.message is not None and down.message.failed
    assert gateway.received == []


@pytest.mark.anyio
async def test_events_without_tokens_and_sends_without_session(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    portal.event_tokens = False
    await portal.operator_writes(1, "15557654321", "from a robot")
    assert set(gateway.received[-1].form["auth"]) == {
        "domain", "server_endpoint", "client_endpoint", "member_id", "application_token",
    }  # fmt: skip
    portal.report_sessions = False
    reply = await call(rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1,
                       MESSAGES=[CLIENT])  # fmt: skip
    assert "session" not in reply["result"]["DATA"]["RESULT"][0]


@pytest.mark.anyio
async def test_emit_never_retries_and_survives_unreachable_handlers(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    gateway.status = 500
    failed = await portal.operator_writes(1, "15557654321", "x")
    assert [d.status for d in failed.deliveries] == [500]
    assert len(gateway.received) == 1

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    portal.http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    lost = await portal.emit("OnImConnectorLineDelete", "1")
    assert lost[0].response is None and lost[0].error is not None
    assert "ConnectError" in lost[0].error
    assert portal.deliveries[-1] is lost[0]
    await portal.http.aclose()


@pytest.mark.anyio
async def test_edit_and_delete_need_an_acked_message(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    sent = (await portal.operator_writes(1, "15557654321", "Helo")).message
    assert sent is not None
    assert (await portal.operator_edits(sent, "Hi")).deliveries == []
    ack = {"im": {"chat_id": sent.bitrix_chat_id, "message_id": sent.im_message_id},
           "message": {"id": ["wamid.A", "wamid.B"]}, "chat": {"id": "15557654321"}}  # fmt: skip
    await call(
        rest,
        portal,
        "imconnector.send.status.delivery",
        CONNECTOR="acme_wa",
        LINE=1,
        MESSAGES=[ack],
    )

    edited = await portal.operator_edits(sent.im_message_id, "Hello")
    fields = dict(gateway.received[-1].pairs)
    assert fields["event"] == "ONIMCONNECTORMESSAGEUPDATE"
    assert fields["data[MESSAGES][0][message][id][0]"] == "wamid.A"
    assert fields["data[MESSAGES][0][message][id][1]"] == "wamid.B"
    assert fields["data[MESSAGES][0][message][text]"] == "[b]Anna:[/b][br] Hello"
    assert edited.message is sent and sent.history == [
        "[b]Anna:[/b][br] Helo",
        "[b]Anna:[/b][br] Hi",
    ]

    await portal.operator_deletes(sent)
    form = gateway.received[-1].form
    assert form["event"] == "ONIMCONNECTORMESSAGEDELETE"
    ids = [item["message"]["id"] for item in form["data"]["MESSAGES"]]
    assert ids == ["wamid.A", "wamid.B"]  # one item per external id, scalar id
    assert portal.messages(chat_id="15557654321")[-1].author == "client"


@pytest.mark.anyio
async def test_dialog_status_and_line_events(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    await portal.dialog_finish(1, "15557654321")
    finish = gateway.received[-1].form
    assert finish["event"] == "ONIMCONNECTORDIALOGFINISH"
    item = finish["data"]["DATA"][0]
    assert item["session"] == {"id": "323", "closed": "Y", "parent_id": "0", "close_term": "10"}
    assert item["connector"] == {
        "connector_id": "acme_wa", "line_id": "1", "chat_id": "15557654321", "user_id": "585",
    }  # fmt: skip
    assert item["chat"] == {"id": "15557654321"} and item["user"] == {"id": "585"}

    # The client writing again opens a new session: DIALOGSTART waits for flush().
    await call(
        rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    await portal.flush()
    start = gateway.received[-1].form["data"]["DATA"][0]["session"]
    assert (start["id"], start["closed"], start["parent_id"]) == ("324", "N", "323")
    await portal.dialog_start(1, "15557654321")
    assert gateway.received[-1].form["data"]["DATA"][0]["session"]["id"] == "324"

    await portal.disconnect_line(1)
    assert gateway.received[-1].pairs[2:4] == [
        ("data[connector]", "acme_wa"),
        ("data[line]", "1"),
    ]
    await portal.delete_line(1)
    assert ("data", "1") in gateway.received[-1].pairs
    assert 1 not in portal.state.lines


@pytest.mark.anyio
async def test_rest_side_effects_are_queued_then_flushed(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    new_chat = {**CLIENT, "chat": {"id": "other"}, "user": {"id": "other"}}
    await call(
        rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[new_chat]
    )
    await call(rest, portal, "imconnector.activate", CONNECTOR="acme_wa", LINE=1, ACTIVE=0)
    assert gateway.received == []
    delivered = await portal.flush()
    assert [d.event for d in delivered] == ["ONIMCONNECTORDIALOGSTART", "ONIMCONNECTORSTATUSDELETE"]
    assert portal.pending == []


@pytest.mark.anyio
async def test_ui_install_posts_the_install_page_and_waits_for_finish(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    reply = await portal.install("https://gw.example.com/b24/install")
    assert reply.status_code == 200
    page = gateway.received[-1]
    assert page.method == "POST"
    assert page.query == {"DOMAIN": "acme.bitrix24.com", "PROTOCOL": "1", "LANG": "en",
                          "APP_SID": "00000000000000000000000000000001"}  # fmt: skip
    form = dict(page.pairs)
    assert set(form) == {
        "AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "SERVER_ENDPOINT", "APPLICATION_TOKEN",
        "APPLICATION_SCOPE", "member_id", "status", "PLACEMENT", "PLACEMENT_OPTIONS",
    }  # fmt: skip
    assert form["AUTH_EXPIRES"] == "3600" and form["PLACEMENT"] == "DEFAULT"
    assert form["SERVER_ENDPOINT"] == "https://oauth.bitrix.info/rest/"
    assert form["APPLICATION_TOKEN"] == portal.application_token != page.query["APP_SID"]
    info = await rest.post("/rest/app.info", json={"auth": form["AUTH_ID"]})
    assert info.json()["result"]["INSTALLED"] is False
    portal.finish_install()
    info = await rest.post("/rest/app.info", json={"auth": form["AUTH_ID"]})
    assert info.json()["result"]["INSTALLED"] is True


@pytest.mark.anyio
async def test_api_only_install_sends_onappinstall_with_refresh_token(
    portal: FakePortal, gateway: Recorder
) -> None:
    await portal.install("https://gw.example.com/b24/install", ui=False)
    assert portal.installed_finished
    form = gateway.received[-1].form
    assert form["event"] == "ONAPPINSTALL" and "event_handler_id" not in form
    assert form["data"] == {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"}
    auth = form["auth"]
    assert auth["application_token"] == portal.application_token
    query = refresh_query(portal, auth["refresh_token"])
    transport = httpx.ASGITransport(app=portal.oauth_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://oauth.bitrix.info") as c:
        assert (await c.get("/oauth/token/", params=query)).status_code == 200


@pytest.mark.anyio
async def test_placements_post_options_as_json(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await call(rest, portal, "imconnector.register", **CONNECTOR)
    await portal.open_connector_settings(line=1)
    posted = gateway.received[-1]
    assert posted.url.startswith("https://gw.example.com/b24/settings?DOMAIN=acme.bitrix24.com")
    form = dict(posted.pairs)
    assert form["PLACEMENT"] == "SETTING_CONNECTOR"
    assert json.loads(form["PLACEMENT_OPTIONS"]) == {
        "CONNECTOR": "acme_wa", "LINE": "1", "STATUS": False, "ACTIVE_STATUS": True,
        "CONNECTION_STATUS": False, "REGISTER_STATUS": False, "ERROR_STATUS": False,
        "URI": "/contact_center/connector/?ID=acme_wa&LINE=1",
    }  # fmt: skip

    await portal.open_placement(
        "https://gw.example.com/custom?x=1", options={"LINE": 1, "ACTIVE_STATUS": 1}
    )
    options = json.loads(dict(gateway.received[-1].pairs)["PLACEMENT_OPTIONS"])
    assert options["ACTIVE_STATUS"] == 1 and options["CONNECTOR"] == "acme_wa"
    assert gateway.received[-1].url.startswith("https://gw.example.com/custom?x=1&DOMAIN=")
    await portal.open_placement("https://gw.example.com/menu", "DEFAULT")
    assert json.loads(dict(gateway.received[-1].pairs)["PLACEMENT_OPTIONS"]) == {}


@pytest.mark.anyio
async def test_uninstall_emits_without_tokens_and_revokes_everything(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    pair = portal.issue_tokens()
    delivered = await portal.uninstall()
    assert [d.event for d in delivered] == ["ONAPPUNINSTALL"]
    form = gateway.received[-1].form
    assert form["data"] == {"LANGUAGE_ID": "en", "CLEAN": "1"}
    assert set(form["auth"]) == {
        "domain", "server_endpoint", "client_endpoint", "member_id", "application_token",
    }  # fmt: skip
    gone = await rest.post("/rest/app.info", json={"auth": pair.access_token})
    assert (gone.status_code, gone.json()["error"]) == (401, "invalid_token")
    assert portal.state.connectors == {} and portal.state.bindings == []
    query = refresh_query(portal, pair.refresh_token)
    transport = httpx.ASGITransport(app=portal.oauth_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://oauth.bitrix.info") as c:
        assert (await c.get("/oauth/token/", params=query)).json()["error"] == "invalid_client"


@pytest.mark.anyio
async def test_fetch_files_drops_unreachable_files(
    portal: FakePortal, rest: httpx.AsyncClient, gateway: Recorder
) -> None:
    await connected(rest, portal)
    portal.fetch_files = True
    gateway.status = 404
    only_file = {
        **CLIENT,
        "message": {"id": "f1", "files": [{"url": "https://gw.example.com/m/x.jpg"}]},
    }
    reply = await call(rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1,
                       MESSAGES=[only_file])  # fmt: skip
    assert reply["result"]["DATA"]["RESULT"][0]["ERRORS"] == [
        "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"
    ]
    assert gateway.received[-1].headers["user-agent"] == "Bitrix Connector Client"
    gateway.status = 200
    reply = await call(rest, portal, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1,
                       MESSAGES=[only_file])  # fmt: skip
    assert reply["result"]["DATA"]["RESULT"][0]["message"]["files"] == [9001]


@pytest.mark.anyio
async def test_standalone_app_serves_portal_oauth_and_control_api(gateway: Recorder) -> None:
    portal = build("127.0.0.1", 8010, rate=None)
    assert portal.client_endpoint == "http://127.0.0.1:8010/rest/"
    assert portal.oauth_token_url == "http://127.0.0.1:8010/oauth/token/"
    async with gateway.client() as http:
        portal.http = http
        transport = httpx.ASGITransport(app=standalone_app(portal))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8010") as c:
            install = await c.post("/_fake/install", json={"url": "https://gw.example.com/i"})
            assert install.json() == {"status": 200}
            await c.post("/_fake/finish_install")
            token = dict(gateway.received[-1].pairs)["AUTH_ID"]
            await c.post("/rest/imconnector.register", json={**CONNECTOR, "auth": token})
            bind = {"event": "OnImConnectorStatusDelete", "handler": EVENTS, "auth": token}
            await c.post("/rest/event.bind", json=bind)
            activate = {"CONNECTOR": "acme_wa", "LINE": 1, "ACTIVE": 1, "auth": token}
            await c.post("/rest/imconnector.activate", json=activate)
            await c.post("/rest/imconnector.activate", json={**activate, "ACTIVE": 0})
            # auto_flush delivered the STATUSDELETE after answering.
            assert gateway.received[-1].form["event"] == "ONIMCONNECTORSTATUSDELETE"
            state = (await c.get("/_fake/state")).json()
            assert [b["event"] for b in state["bindings"]] == ["ONIMCONNECTORSTATUSDELETE"]
            assert (await c.post("/_fake/flush")).json() == {"deliveries": []}
