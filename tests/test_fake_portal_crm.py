"""The fake portal's CRM methods answer as the public docs say (api-reference/messageservice,
api-reference/bizproc/bizproc-robot), errors included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.crm import RobotRun, SmsMessage

pytestmark = pytest.mark.anyio

ROBOT = {
    "CODE": "acme_send",
    "HANDLER": "https://gw.example.com/robot",
    "NAME": {"en": "Send", "ru": "Отправить"},
    "USE_SUBSCRIPTION": "Y",
    "PROPERTIES": {"phone": {"Name": "Phone", "Type": "string", "Required": "Y"}},
    "RETURN_PROPERTIES": {"status": {"Name": "Status", "Type": "string"}},
}


@pytest.fixture
def portal() -> FakePortal:
    return FakePortal(rate=None)


@pytest.fixture
async def rest(portal: FakePortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=portal.app)
    async with httpx.AsyncClient(transport=transport, base_url=portal.base_url) as client:
        yield client


async def call(
    rest: httpx.AsyncClient, portal: FakePortal, method: str, **params: Any
) -> tuple[int, Any]:
    token = portal.issue_tokens().access_token
    response = await rest.post(f"/rest/{method}", json={**params, "auth": token})
    body = response.json()
    return response.status_code, body.get("result", body.get("error"))


async def test_sender_lifecycle_and_status_updates(
    portal: FakePortal, rest: httpx.AsyncClient
) -> None:
    sender = {"CODE": "acme.wa", "TYPE": "SMS", "HANDLER": "https://gw.example.com/sms"}
    assert await call(rest, portal, "messageservice.sender.add", **sender) == (
        400,
        "ERROR_SENDER_VALIDATION_FAILURE",
    )  # no NAME
    sender["NAME"] = "WhatsApp"
    assert await call(rest, portal, "messageservice.sender.add", **sender) == (200, True)
    assert await call(rest, portal, "messageservice.sender.update", CODE="acme.wa") == (
        400,
        "ERROR_SENDER_VALIDATION_FAILURE",
    )  # nothing to update
    assert await call(
        rest, portal, "messageservice.sender.update", CODE="acme.wa", NAME="WA 2"
    ) == (200, True)
    assert portal.crm.senders["acme.wa"]["NAME"] == "WA 2"

    message = SmsMessage("65575980fa531ac284c2ee68f81ebebd", "acme.wa", "79001234567", "hi")
    portal.crm.sms[message.message_id] = message
    update = {"CODE": "acme.wa", "MESSAGE_ID": message.message_id}
    assert await call(
        rest, portal, "messageservice.message.status.update", **update, STATUS="read"
    ) == (
        400,
        "ERROR_MESSAGE_STATUS_INCORRECT",
    )
    for status in ("sent", "delivered"):
        assert await call(
            rest, portal, "messageservice.message.status.update", **update, STATUS=status
        ) == (200, True)
    assert message.statuses == ["sent", "delivered"]
    unknown = {**update, "MESSAGE_ID": "nope", "STATUS": "sent"}
    assert await call(rest, portal, "messageservice.message.status.update", **unknown) == (
        400,
        "ERROR_MESSAGE_NOT_FOUND",
    )
    assert await call(rest, portal, "messageservice.sender.delete", CODE="acme.wa") == (200, True)
    assert await call(rest, portal, "messageservice.sender.delete", CODE="acme.wa") == (
        400,
        "ERROR_SENDER_NOT_FOUND",
    )


async def test_robots_and_event_send(portal: FakePortal, rest: httpx.AsyncClient) -> None:
    assert await call(rest, portal, "bizproc.robot.add", **ROBOT) == (200, True)
    assert await call(rest, portal, "bizproc.robot.add", **ROBOT) == (
        400,
        "ERROR_ACTIVITY_ALREADY_INSTALLED",
    )
    bad_key = {**ROBOT, "CODE": "other", "PROPERTIES": {"1phone": {"Name": "x"}}}
    assert await call(rest, portal, "bizproc.robot.add", **bad_key) == (
        400,
        "ERROR_ACTIVITY_VALIDATION_FAILURE",
    )
    ftp = {**ROBOT, "CODE": "other", "HANDLER": "ftp://gw.example.com/robot"}
    assert await call(rest, portal, "bizproc.robot.add", **ftp) == (
        400,
        "ERROR_UNSUPPORTED_PROTOCOL",
    )
    fields = {"NAME": {"en": "Send it"}}
    assert await call(rest, portal, "bizproc.robot.update", CODE="acme_send", FIELDS=fields) == (
        200,
        True,
    )
    assert await call(rest, portal, "bizproc.robot.list") == (200, ["acme_send"])

    run = RobotRun("55c1dc1c3f0d75.78875596|A51601", "acme_send", {})
    portal.crm.runs[run.token] = run
    values = {"status": "sent"}
    sent = {"EVENT_TOKEN": run.token, "RETURN_VALUES": values, "LOG_MESSAGE": "done"}
    assert await call(rest, portal, "bizproc.event.send", **sent) == (200, True)
    assert run.returned == values and run.log == ["done"]
    assert await call(rest, portal, "bizproc.event.send", **sent) == (403, "ACCESS_DENIED")
    assert await call(rest, portal, "bizproc.robot.delete", CODE="acme_send") == (200, True)
