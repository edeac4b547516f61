"""The fake portal's OAuth server, REST envelopes and batch, checked against the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal, oauth_server
from gateway_fakes.bitrix24.testing import ManualClock

CONNECTOR = {
    "ID": "acme_wa",
    "NAME": "Acme WhatsApp",
    "ICON": {"DATA_IMAGE": "data:image/svg+xml;base64,PHN2Zy8+", "COLOR": "#25D366"},
    "PLACEMENT_HANDLER": "https://gw.example.com/b24/settings",
}
CLIENT = {
    "user": {"id": "79991234567", "name": "Ivan", "skip_phone_validate": "Y"},
    "message": {"id": "wamid.1", "date": 1773265993, "text": "Hello"},
    "chat": {"id": "79991234567", "name": "Ivan Petrov"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def portal(clock: ManualClock) -> FakePortal:
    return FakePortal(clock=clock, rate=None)


@pytest.fixture
async def rest(portal: FakePortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=portal.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://acme.bitrix24.com"
    ) as client:
        yield client


@pytest.fixture
async def oauth(portal: FakePortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=portal.oauth_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://oauth.bitrix.info") as c:
        yield c


@pytest.fixture
def token(portal: FakePortal) -> str:
    return portal.issue_tokens().access_token


async def call(client: httpx.AsyncClient, token: str, method: str, **params: Any) -> httpx.Response:
    return await client.post(f"/rest/{method}", json={**params, "auth": token})


async def ready_line(client: httpx.AsyncClient, token: str, line: int = 1) -> None:
    assert (await call(client, token, "imconnector.register", **CONNECTOR)).status_code == 200
    reply = await call(
        client, token, "imconnector.activate", CONNECTOR="acme_wa", LINE=line, ACTIVE=1
    )
    assert reply.json()["result"] is True


def refresh_query(portal: FakePortal, refresh_token: str) -> dict[str, str]:
    return {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": refresh_token,
    }


# -- OAuth ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_refresh_rotates_and_reuse_is_invalid_grant(
    portal: FakePortal, oauth: httpx.AsyncClient, clock: ManualClock
) -> None:
    first = portal.issue_tokens(user_id=67)
    reply = await oauth.get("/oauth/token/", params=refresh_query(portal, first.refresh_token))
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {
        "access_token", "expires", "expires_in", "scope", "domain", "server_endpoint",
        "status", "client_endpoint", "member_id", "user_id", "refresh_token",
    }  # fmt: skip
    assert body["domain"] == "oauth.bitrix.info"  # the auth server, not the portal
    assert body["client_endpoint"] == "https://acme.bitrix24.com/rest/"
    assert body["user_id"] == 67 and body["expires_in"] == 3600
    assert body["expires"] == int(portal.now()) + 3600
    assert body["refresh_token"] != first.refresh_token

    again = await oauth.get("/oauth/token/", params=refresh_query(portal, first.refresh_token))
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_grant", "error_description": "Invalid grant"}

    # The new refresh token works, also as a POST form (what CRest does).
    form = refresh_query(portal, body["refresh_token"])
    assert (await oauth.post("/oauth/token/", data=form)).status_code == 200


@pytest.mark.anyio
async def test_oauth_client_checks_and_code_grant(
    portal: FakePortal, oauth: httpx.AsyncClient, clock: ManualClock
) -> None:
    pair = portal.issue_tokens()
    wrong = {**refresh_query(portal, pair.refresh_token), "client_secret": "nope"}
    assert (await oauth.get("/oauth/token/", params=wrong)).json()["error"] == "invalid_client"
    assert (await oauth.get("/oauth/token/", params={})).json()["error"] == "invalid_request"

    portal.faults.payment_required = True
    paid = await oauth.get("/oauth/token/", params=refresh_query(portal, pair.refresh_token))
    assert paid.json() == {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
    portal.faults.payment_required = False

    code_query = {
        "grant_type": "authorization_code",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "code": portal.authorize(),
    }
    assert (await oauth.get("/oauth/token/", params=code_query)).status_code == 200
    assert (await oauth.get("/oauth/token/", params=code_query)).json()["error"] == "invalid_grant"
    code_query["code"] = portal.authorize()
    clock.advance(31)  # codes live 30 s
    assert (await oauth.get("/oauth/token/", params=code_query)).json()["error"] == "invalid_grant"


@pytest.mark.anyio
async def test_portal_app_also_serves_oauth_and_one_server_serves_many_portals() -> None:
    first = FakePortal(token_prefix="a-")
    second = FakePortal(domain="beta.bitrix24.com", member_id="b" * 32, token_prefix="b-")
    transport = httpx.ASGITransport(app=oauth_server(first, second))
    async with httpx.AsyncClient(transport=transport, base_url="https://oauth.bitrix.info") as c:
        pair = second.issue_tokens()
        body = (
            await c.get("/oauth/token/", params=refresh_query(second, pair.refresh_token))
        ).json()
        assert body["member_id"] == "b" * 32 and body["access_token"].startswith("b-")
    single = httpx.ASGITransport(app=first.app)
    async with httpx.AsyncClient(transport=single, base_url="https://acme.bitrix24.com") as c:
        pair = first.issue_tokens()
        reply = await c.post("/oauth/token", data=refresh_query(first, pair.refresh_token))
        assert reply.status_code == 200


# -- REST transport and auth -------------------------------------------------------------


@pytest.mark.anyio
async def test_access_token_lifecycle(
    portal: FakePortal, rest: httpx.AsyncClient, token: str, clock: ManualClock
) -> None:
    assert (await call(rest, token, "app.info")).status_code == 200
    missing = await rest.post("/rest/app.info", json={})
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "NO_AUTH_FOUND",
        "error_description": "Wrong authorization data",
    }
    unknown = await call(rest, "forged", "app.info")
    assert (unknown.status_code, unknown.json()["error"]) == (401, "invalid_token")
    clock.advance(3600)
    expired = await call(rest, token, "app.info")
    assert expired.status_code == 401
    assert expired.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired.",
    }
    assert portal.calls[-1].error == "expired_token" and portal.calls[-1].status == 401


@pytest.mark.anyio
async def test_params_from_query_form_and_json(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    by_query = await rest.get("/rest/APP.INFO.json", params={"auth": token})
    by_form = await rest.post("/rest/app.info", data={"auth": token})
    by_json = await rest.post("/rest/app.info.json", json={"auth": token})
    assert {r.status_code for r in (by_query, by_form, by_json)} == {200}
    assert [c.method for c in portal.calls] == ["app.info"] * 3
    files = {"upload": ("a.txt", b"x")}
    multipart = await rest.post("/rest/app.info", data={"auth": token}, files=files)
    assert multipart.status_code == 200
    broken = await rest.post(
        "/rest/app.info", content=b'{"auth":', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    not_found = await call(rest, token, "crm.lead.add")
    assert not_found.status_code == 404
    assert not_found.json() == {
        "error": "ERROR_METHOD_NOT_FOUND",
        "error_description": "Method not found!",
    }


@pytest.mark.anyio
async def test_webhooks_lack_app_context_and_scope_is_enforced(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    hook = await rest.post("/rest/1/k3y/imconnector.register", json=CONNECTOR)
    assert hook.status_code == 403
    assert hook.json()["error"] == "WRONG_AUTH_TYPE"
    assert (await rest.post("/rest/1/k3y/imopenlines.config.list.get")).status_code == 200
    portal.scope = "im"
    denied = await call(rest, token, "imconnector.list")
    assert (denied.status_code, denied.json()["error"]) == (403, "insufficient_scope")


# -- imconnector.* -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_register_envelope_errors_and_flags(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    reply = await call(rest, token, "imconnector.register", **CONNECTOR, NEED_SIGNATURE=False)
    assert reply.status_code == 200
    assert reply.json()["result"] == {"result": True}
    assert set(reply.json()["time"]) >= {"start", "finish", "duration", "date_start", "operating"}
    assert portal.state.connectors["acme_wa"].need_signature is False

    again = await call(
        rest, token, "imconnector.register", **{**CONNECTOR, "ID": "ACME_WA", "NAME": "New"}
    )
    assert again.json()["result"] == {"result": True}
    assert list(portal.state.connectors) == ["acme_wa"]
    assert portal.state.connectors["acme_wa"].name == "New"

    no_id = await call(rest, token, "imconnector.register", **{**CONNECTOR, "ID": ""})
    assert no_id.status_code == 200
    assert no_id.json()["result"] == {
        "result": False,
        "error": "CONNECTOR_ID_REQUIRED",
        "error_description": "Connector ID not specified",
    }
    dotted = await call(rest, token, "imconnector.register", **{**CONNECTOR, "ID": "a.b"})
    assert dotted.json()["result"]["error"] == "APPLICATION_REGISTRATION_ERROR_POINT"
    no_icon = await call(rest, token, "imconnector.register", **{**CONNECTOR, "ICON": {}})
    assert no_icon.json()["result"]["error"] == "ICON_REQUIRED"

    # Form booleans are strings: the `=== true/false` check ignores them.
    form = {"auth": token, "ID": "formed", "NAME": "F", "ICON[DATA_IMAGE]": "data:x",
            "PLACEMENT_HANDLER": "https://gw.example.com/s", "CHAT_GROUP": "true"}  # fmt: skip
    assert (await rest.post("/rest/imconnector.register", data=form)).json()["result"]["result"]
    assert portal.state.connectors["formed"].chat_group is False


@pytest.mark.anyio
async def test_activate_status_and_connector_data(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await call(rest, token, "imconnector.register", **CONNECTOR)
    before = await call(rest, token, "imconnector.status", CONNECTOR="acme_wa", LINE=1)
    assert before.json()["result"] == {
        "LINE": 1, "CONNECTOR": "acme_wa", "ERROR": False, "CONFIGURED": False, "STATUS": False,
    }  # fmt: skip
    missing = await call(rest, token, "imconnector.activate", CONNECTOR="acme_wa", LINE=1)
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "ERROR_ARGUMENT",
        "error_description": "Argument 'ACTIVE' is null or empty",
    }
    on = await call(rest, token, "imconnector.activate", CONNECTOR="acme_wa", LINE=1, ACTIVE=1)
    assert on.json()["result"] is True
    after = await call(rest, token, "imconnector.status", CONNECTOR="acme_wa", LINE=1)
    assert after.json()["result"] == {
        "LINE": 1, "CONNECTOR": "acme_wa", "ERROR": False, "CONFIGURED": True, "STATUS": True,
    }  # fmt: skip

    data = {"ID": "wa_1555", "URL": "https://wa.me/1555", "URL_IM": "", "NAME": "WhatsApp"}
    await call(
        rest, token, "imconnector.connector.data.set", CONNECTOR="acme_wa", LINE=1, DATA=data
    )
    await call(
        rest,
        token,
        "imconnector.connector.data.set",
        CONNECTOR="acme_wa",
        LINE=1,
        DATA={"NAME": "WA 2"},
    )
    assert portal.state.statuses[("acme_wa", 1)].data == {
        "connector_id": "acme_wa", "id": "wa_1555", "url": "https://wa.me/1555", "name": "WA 2",
    }  # fmt: skip

    # "0" is empty in PHP: the row is deleted and the app hears STATUSDELETE later.
    off = await rest.post(
        "/rest/imconnector.activate",
        data={"auth": token, "CONNECTOR": "acme_wa", "LINE": "1", "ACTIVE": "0"},
    )
    assert off.json()["result"] is True
    assert ("acme_wa", 1) not in portal.state.statuses
    assert portal.pending == [("ONIMCONNECTORSTATUSDELETE", {"connector": "acme_wa", "line": "1"})]


@pytest.mark.anyio
async def test_send_messages_envelope_sessions_and_no_dedupe(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await ready_line(rest, token)
    reply = await call(
        rest, token, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    assert reply.status_code == 200
    result = reply.json()["result"]
    assert result["SUCCESS"] is True
    item = result["DATA"]["RESULT"][0]
    assert item == {
        "user": "585",
        "message": {"id": "wamid.1", "date": {}, "text": "Hello", "files": []},
        "chat": {"id": "79991234567", "name": "Ivan Petrov"},
        "extra": {"skip_phone_validate": "Y"},
        "SUCCESS": True,
        "session": {"ID": "323", "CHAT_ID": "1807"},
    }
    assert [event for event, _ in portal.pending] == ["ONIMCONNECTORDIALOGSTART"]

    second = await call(
        rest, token, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    assert second.json()["result"]["DATA"]["RESULT"][0]["session"] == {
        "ID": "323",
        "CHAT_ID": "1807",
    }
    shown = portal.messages(line=1, chat_id="79991234567")
    assert [(m.text, m.author, m.external_ids) for m in shown] == [
        ("Hello", "client", ["wamid.1"]),
        ("Hello", "client", ["wamid.1"]),  # Bitrix does not dedupe by message.id
    ]
    assert len(portal.calls_to("imconnector.send.messages")) == 2


@pytest.mark.anyio
async def test_send_messages_item_and_request_errors(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await ready_line(rest, token)
    no_user = {**CLIENT, "user": {"name": "x"}}
    no_text = {**CLIENT, "message": {"id": "m"}}
    reply = await call(rest, token, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1,
                       MESSAGES=[no_user, no_text, CLIENT])  # fmt: skip
    result = reply.json()["result"]
    assert result["SUCCESS"] is False
    outcomes = [(i["SUCCESS"], i.get("ERRORS")) for i in result["DATA"]["RESULT"]]
    assert outcomes == [
        (False, ["CONNECTOR_PROXY_NO_USER_IM"]),
        (False, ["IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"]),
        (True, None),
    ]

    async def error_of(**params: Any) -> tuple[int, str, str]:
        answer = await call(rest, token, "imconnector.send.messages", **params)
        return answer.status_code, answer.json()["error"], answer.json()["error_description"]

    assert await error_of(CONNECTOR="acme_wa", MESSAGES=[CLIENT]) == (
        400, "ERROR_ARGUMENT", "Argument 'LINE' is null or empty",
    )  # fmt: skip
    assert (await error_of(CONNECTOR="acme_wa", LINE=1, MESSAGES="x"))[2] == (
        "The value of an argument 'MESSAGES' must be of type array"
    )
    assert (await error_of(CONNECTOR="acme_wa", LINE=1, MESSAGES=["x"]))[2] == (
        "The MESSAGES parameter must be an array of messages (arrays)"
    )
    assert (await error_of(CONNECTOR="acme_wa", LINE=1, MESSAGES=[{"user": {}}]))[2] == (
        "The incorrect structure of a message inside MESSAGES parameter."
    )
    assert await error_of(CONNECTOR="acme_wa", LINE=2, MESSAGES=[CLIENT]) == (
        400, "NOT_ACTIVE_LINE", "The line with this ID is inactive or does not exist",
    )  # fmt: skip
    assert (await error_of(CONNECTOR="other", LINE=1, MESSAGES=[CLIENT]))[1] == (
        "IMCONNECTOR_NO_CORRECT_PROVIDER"
    )


@pytest.mark.anyio
async def test_send_messages_as_php_form_with_any_key_case(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await ready_line(rest, token)
    form = {
        "auth": token, "connector": "acme_wa", "line": "1",
        "MESSAGES[0][USER][ID]": "42", "MESSAGES[0][Message][Text]": "form text",
        "MESSAGES[0][Message][ID]": "m-1", "MESSAGES[0][chat][id]": "42",
    }  # fmt: skip
    reply = await rest.post("/rest/imconnector.send.messages.json", data=form)
    assert reply.json()["result"]["SUCCESS"] is True
    assert portal.calls[-1].params["MESSAGES"] == [
        {"USER": {"ID": "42"}, "Message": {"Text": "form text", "ID": "m-1"},
         "chat": {"id": "42"}}
    ]  # fmt: skip
    assert portal.messages(chat_id="42")[0].text == "form text"


@pytest.mark.anyio
async def test_update_and_delete_client_messages(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await ready_line(rest, token)
    await call(
        rest, token, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    edit = {**CLIENT, "message": {"id": "wamid.1", "text": "Hello, edited"}}
    updated = await call(
        rest, token, "imconnector.update.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[edit]
    )
    item = updated.json()["result"]["DATA"]["RESULT"][0]
    assert item["SUCCESS"] is True and "session" not in item
    assert portal.messages()[0].text == "Hello, edited"
    assert portal.messages()[0].history == ["Hello"]

    gone = {
        "user": {"id": "79991234567"},
        "message": {"id": "wamid.1"},
        "chat": {"id": "79991234567"},
    }
    deleted = await call(
        rest, token, "imconnector.delete.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[gone]
    )
    assert deleted.json()["result"] == {
        "SUCCESS": True,
        "DATA": {"RESULT": [{**gone, "user": "585", "SUCCESS": True}]},
    }
    assert portal.messages() == [] and len(portal.messages(include_deleted=True)) == 1
    again = await call(
        rest, token, "imconnector.delete.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[gone]
    )
    assert again.json()["result"]["SUCCESS"] is False


@pytest.mark.anyio
async def test_delivery_ack_reading_set_error_and_chat_name(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    await ready_line(rest, token)
    await call(
        rest, token, "imconnector.send.messages", CONNECTOR="acme_wa", LINE=1, MESSAGES=[CLIENT]
    )
    reply = (await portal.operator_writes(1, "79991234567", "Hi")).message
    assert reply is not None and reply.sending
    no_im = {"message": {"id": ["wamid.X"]}, "chat": {"id": "79991234567"}}
    ack = {**no_im, "im": {"chat_id": reply.bitrix_chat_id, "message_id": reply.im_message_id}}
    quiet = await call(
        rest,
        token,
        "imconnector.send.status.delivery",
        CONNECTOR="acme_wa",
        LINE=1,
        MESSAGES=[no_im],
    )
    assert quiet.json()["result"] == {"SUCCESS": True, "DATA": []}
    assert reply.sending and reply.external_ids == []
    await call(
        rest, token, "imconnector.send.status.delivery", CONNECTOR="acme_wa", LINE=1, MESSAGES=[ack]
    )
    assert (reply.sending, reply.delivered, reply.external_ids) == (False, True, ["wamid.X"])
    read = await call(
        rest, token, "imconnector.send.status.reading", CONNECTOR="acme_wa", LINE=1, MESSAGES=[ack]
    )
    assert read.json()["result"] == {"SUCCESS": True, "DATA": []}

    name = {"CONNECTOR": "acme_wa", "LINE": 1, "CHAT_ID": "79991234567", "NAME": "VIP"}
    no_user = await call(rest, token, "imconnector.chat.name.set", **name)
    assert no_user.json()["error"] == "ERROR_ARGUMENT"
    renamed = await call(rest, token, "imconnector.chat.name.set", **name, USER_ID="79991234567")
    assert renamed.json()["result"] == {"SUCCESS": True, "DATA": {"RESULT": {}}}
    unknown = await call(
        rest, token, "imconnector.chat.name.set", **{**name, "CHAT_ID": "1"}, USER_ID="1"
    )
    assert unknown.json()["error"] == "CHAT_RENAMING_FAILED"

    failed = await call(rest, token, "imconnector.set.error", CONNECTOR="acme_wa", LINE=1)
    assert failed.json()["result"]["SUCCESS"] is True
    status = (await call(rest, token, "imconnector.status", CONNECTOR="acme_wa", LINE=1)).json()
    assert (status["result"]["ERROR"], status["result"]["STATUS"]) == (True, False)


@pytest.mark.anyio
async def test_list_and_unregister(portal: FakePortal, rest: httpx.AsyncClient, token: str) -> None:
    await ready_line(rest, token)
    listed = (await call(rest, token, "imconnector.list")).json()["result"]
    assert listed["acme_wa"] == "Acme WhatsApp" and "livechat" in listed
    placements = (await call(rest, token, "placement.get")).json()["result"]
    assert placements[0]["placement"] == "SETTING_CONNECTOR"
    gone = await call(rest, token, "imconnector.unregister", ID="acme_wa")
    assert gone.json()["result"] == {"result": True}
    assert portal.state.statuses == {}
    assert [e for e, _ in portal.pending] == ["ONIMCONNECTORSTATUSDELETE"]
    again = await call(rest, token, "imconnector.unregister", ID="acme_wa")
    assert again.json()["result"]["error"] == "APPLICATION_UNREGISTRATION_ERROR"


# -- event.*, app.info, imopenlines.config.*, messageservice ------------------------------


@pytest.mark.anyio
async def test_event_bind_get_unbind(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    handler = "https://gw.example.com/b24/events"
    bound = await call(rest, token, "event.bind", event="OnImConnectorMessageAdd", handler=handler)
    assert bound.json()["result"] is True
    duplicate = await call(
        rest, token, "event.bind", event="onimconnectormessageadd", handler=handler
    )
    assert duplicate.status_code == 400
    assert duplicate.json() == {
        "error": "ERROR_CORE",
        "error_description": "Unable to set event handler: Handler already binded",
    }

    async def bind_error(event: str, url: str) -> str:
        return str(
            (await call(rest, token, "event.bind", event=event, handler=url)).json()["error"]
        )

    assert (
        await bind_error("OnImConnectorMessageAdd", "http://localhost/x")
        == "ERROR_WRONG_HANDLER_URL"
    )
    assert (
        await bind_error("OnImConnectorMessageAdd", "ftp://gw.example.com/")
        == "ERROR_UNSUPPORTED_PROTOCOL"
    )
    assert await bind_error("OnNothing", handler) == "ERROR_EVENT_NOT_FOUND"
    listed = await call(rest, token, "event.get")
    assert listed.json()["result"] == [
        {"event": "ONIMCONNECTORMESSAGEADD", "handler": handler, "auth_type": "0", "offline": 0}
    ]
    removed = await call(
        rest, token, "event.unbind", event="OnImConnectorMessageAdd", handler=handler
    )
    assert removed.json()["result"] == {"count": 1}
    assert (await call(rest, token, "event.get")).json()["result"] == []


@pytest.mark.anyio
async def test_app_info_and_open_lines(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    info = (await call(rest, token, "app.info")).json()["result"]
    assert info["INSTALLED"] is True and info["STATUS"] == "L"
    portal.installed_finished = False
    assert (await call(rest, token, "app.info")).json()["result"]["INSTALLED"] is False

    added = await call(rest, token, "imopenlines.config.add", PARAMS={"LINE_NAME": "Sales"})
    assert added.json()["result"] == 2
    rows = (await call(rest, token, "imopenlines.config.list.get")).json()["result"]
    assert [(r["ID"], r["LINE_NAME"], r["ACTIVE"]) for r in rows] == [
        ("1", "Open Channel", "Y"), ("2", "Sales", "Y"),
    ]  # fmt: skip
    query = {"select": ["ID", "LINE_NAME"], "filter": {"ID": 2}}
    picked = await call(rest, token, "imopenlines.config.list.get", PARAMS=query)
    assert picked.json()["result"] == [{"ID": "2", "LINE_NAME": "Sales"}]
    assert (await call(rest, token, "imopenlines.config.get", CONFIG_ID=2)).json()["result"][
        "ID"
    ] == "2"
    assert (await call(rest, token, "imopenlines.config.get", CONFIG_ID=9)).json()[
        "result"
    ] is False
    await call(rest, token, "imopenlines.config.update", CONFIG_ID=2, PARAMS={"ACTIVE": "N"})
    assert portal.state.lines[2].active is False
    assert (await call(rest, token, "imopenlines.config.delete", CONFIG_ID=2)).json()[
        "result"
    ] is True
    assert portal.pending == [("ONIMCONNECTORLINEDELETE", "2")]


@pytest.mark.anyio
async def test_messageservice_sender(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    sender = {
        "CODE": "acme_wa",
        "TYPE": "SMS",
        "HANDLER": "https://gw.example.com/sms",
        "NAME": "WA",
    }
    assert (await call(rest, token, "messageservice.sender.add", **sender)).json()["result"] is True
    twice = await call(rest, token, "messageservice.sender.add", **sender)
    assert twice.json()["error"] == "ERROR_SENDER_ALREADY_INSTALLED"
    bad = await call(rest, token, "messageservice.sender.add", **{**sender, "CODE": "a b"})
    assert bad.json()["error_description"] == "Wrong sender code!"
    assert (await call(rest, token, "messageservice.sender.list")).json()["result"] == ["acme_wa"]


# -- batch ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_batch_binds_like_the_install_transcript(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    handler = quote("https://gw.example.com/b24/events", safe="")
    events = ["OnImConnectorMessageAdd", "OnImConnectorMessageUpdate", "OnAppUninstall"]
    cmd = {f"b{i}": f"event.bind?event={e}&handler={handler}" for i, e in enumerate(events, 1)}
    reply = await rest.post("/rest/batch", json={"halt": 0, "cmd": cmd, "auth": token})
    assert reply.status_code == 200
    result = reply.json()["result"]
    assert result["result"] == {"b1": True, "b2": True, "b3": True}
    assert result["result_error"] == [] and result["result_total"] == []
    assert set(result["result_time"]) == {"b1", "b2", "b3"}
    assert [c.batch_key for c in portal.calls_to("event.bind")] == ["b1", "b2", "b3"]
    assert len(portal.calls_to("event.bind", include_batch=False)) == 0

    # halt=0 runs on past an error; halt=1 stops at it.
    again = await rest.post(
        "/rest/batch", json={"halt": 0, "cmd": {"x": cmd["b1"], "y": "app.info"}, "auth": token}
    )
    assert again.json()["result"]["result_error"]["x"]["error"] == "ERROR_CORE"
    assert "y" in again.json()["result"]["result"]
    halted = await rest.post(
        "/rest/batch", json={"halt": 1, "cmd": {"x": cmd["b1"], "y": "app.info"}, "auth": token}
    )
    assert halted.json()["result"]["result"] == [] and list(
        halted.json()["result"]["result_error"]
    ) == ["x"]


@pytest.mark.anyio
async def test_batch_references_lists_limits_and_form_transport(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    cmd = [
        "imopenlines.config.add?PARAMS[LINE_NAME]=Support",
        "imopenlines.config.get?CONFIG_ID=$result[0]",
        "imopenlines.config.list.get",
        "imopenlines.config.get?CONFIG_ID=$result[2][1][ID]",
    ]
    reply = await rest.post("/rest/batch", json={"cmd": cmd, "auth": token})
    results = reply.json()["result"]["result"]
    assert isinstance(results, list)
    assert results[0] == 2 and results[1]["LINE_NAME"] == "Support" and results[3]["ID"] == "2"

    nested = await rest.post(
        "/rest/batch", json={"cmd": {"n": "batch?cmd[a]=app.info"}, "auth": token}
    )
    assert nested.json()["result"]["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    too_many = await rest.post("/rest/batch", json={"cmd": ["app.info"] * 51, "auth": token})
    assert (too_many.status_code, too_many.json()["error"]) == (400, "ERROR_BATCH_LENGTH_EXCEEDED")

    # URL-encoded transport: command strings are encoded twice.
    inner = urlencode({"CONFIG_ID": "1"})
    body = urlencode({"auth": token, "halt": "0", "cmd[one]": f"imopenlines.config.get?{inner}"})
    formed = await rest.post(
        "/rest/batch", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert formed.json()["result"]["result"]["one"]["ID"] == "1"
