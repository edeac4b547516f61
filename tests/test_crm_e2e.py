"""Writing first from Bitrix24's CRM, end to end over real HTTP against the fake portal.

The gateway runs on real uvicorn. The fake portal plays the CRM: a manager's "Send SMS"
through the WhatsApp sender, robots of an automation rule; its calls reach the gateway
over real HTTP (the gateway's public host swapped for its loopback address).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.browser import form_fields
from gateway_fakes.cloudapi import FakeCloudApi

from gateway.testing import GatewayHarness, Recorder, ToGateway, running_gateway

pytestmark = pytest.mark.anyio

PUBLIC = "https://gw.example.com"
CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
SENDER = "whatschat.wa"
SEND_ROBOT, WAIT_ROBOT = "whatschat_send", "whatschat_wait"


@dataclass
class World:
    h: GatewayHarness
    portal: FakePortal
    recorder: Recorder

    async def until(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        """Wait for `predicate`, woken by each pipeline observation (no polling sleeps)."""
        async with asyncio.timeout(within):
            while not predicate():
                kinds = ("delivered", "accepted", "retried", "dead_lettered")
                waits = [
                    asyncio.ensure_future(
                        self.h.observer.wait_for(k, len(self.h.observer.of_type(k)) + 1, 30)
                    )
                    for k in kinds
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()

    async def channel(self, body: dict[str, Any]) -> None:
        response = await self.h.client.post("/webhooks/wa", json=body, headers=CHANNEL_AUTH)
        assert response.status_code == 200, response.text


CLOUD = {
    "provider": "cloudapi",
    "phone_number_id": "106540352242922",
    "access_token": "EAAGfakeAccessToken0000000000",
    "app_secret": "fake-app-secret",
    "verify_token": "verify-me-please",
    "waba_id": "102290129340398",
    "pair_interval": 0,
}


def settings(
    tmp_path: Path, portal: FakePortal, channel: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 5, "jitter": 0.0},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa": channel
            or {"provider": "test-channel", "base_url": "http://channel.test", "token": "wa-token"}
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                "connector_id": "whatschat",
            }
        },
    }


@asynccontextmanager
async def world(
    tmp_path: Path, cloud: FakeCloudApi | None = None, language: str = "en"
) -> AsyncIterator[World]:
    recorder = Recorder(name="wa")
    to_gateway = ToGateway()
    async with httpx.AsyncClient(transport=to_gateway, timeout=30.0) as portal_http:
        portal = FakePortal(http=portal_http, installed=False)
        portal.app_record.language_id = language
        apps = {
            "acme.bitrix24.com": portal.app,
            "oauth.bitrix.info": portal.oauth_app,
            "channel.test": recorder.app,
        }
        if cloud is not None:
            cloud.http = portal_http
            apps["graph.facebook.com"] = cloud.app
        channel = CLOUD if cloud is not None else None
        async with running_gateway(
            settings(tmp_path, portal, channel), apps=apps, serve_http=True
        ) as h:
            assert h.url is not None
            to_gateway.target = httpx.URL(h.url)
            w = World(h, portal, recorder)
            response = await portal.install(f"{PUBLIC}/webhooks/b24/install")
            assert response.status_code == 200, response.text
            portal.finish_install()
            page = await portal.open_connector_settings(line=1)
            linked = await h.client.post(
                "/webhooks/b24/placement", data=form_fields(page.text, "link", "wa")
            )
            assert linked.status_code == 200, linked.text
            routes = [r for r in await h.gateway.routes() if r.crm == "b24"]
            assert [r.channel for r in routes] == ["wa"], linked.text
            yield w


async def test_crm_card_to_whatsapp_status_back_and_the_reply_in_the_open_line(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        portal = w.portal
        # linking the line registered the number as an SMS provider, and the robots
        assert list(portal.crm.senders) == [SENDER]
        sender = portal.crm.senders[SENDER]
        assert sender["HANDLER"] == f"{PUBLIC}/webhooks/b24/sms"
        assert sender["NAME"]["ru"] == "WhatsApp (wa)"
        assert set(portal.crm.robots) == {SEND_ROBOT, WAIT_ROBOT}
        assert portal.crm.robots[SEND_ROBOT]["USE_SUBSCRIPTION"] == "Y"
        steps = "\n".join(w.h.gateway.instances["b24"].setup_instructions())
        assert "messageservice, bizproc" in steps  # what `gateway check` prints

        # the manager writes first from the contact's card, the number typed nationally
        sms, response = await portal.send_sms(SENDER, "8 (900) 123-45-67", "Your order is ready")
        assert response.status_code == 200, response.text
        await w.recorder.wait_count(1)
        sent = w.recorder.received[0]
        assert (sent.conversation, sent.text) == ("79001234567", "Your order is ready")
        await w.until(lambda: sms.status == "sent")
        [mirrored] = portal.messages(line=1, chat_id="79001234567")
        assert mirrored.author == "operator" and "Your order is ready" in mirrored.text

        # WhatsApp reports it delivered, then read: the CRM shows delivered
        # (WhatsApp's own "sent" is not told again: the CRM saw it when the channel took it)
        statuses = [{"id": sent.native_id, "status": s} for s in ("sent", "delivered")]
        await w.channel({"statuses": statuses})
        await w.until(lambda: sms.statuses[-1:] == ["delivered"])
        assert sms.statuses == ["sent", "delivered"]

        # the customer answers: the same open-line chat
        await w.channel(
            {
                "messages": [
                    {"id": "in1", "chat": "79001234567", "from": "79001234567", "text": "Thanks!"}
                ]
            }
        )
        await w.until(lambda: len(portal.messages(line=1, chat_id="79001234567")) == 2)
        assert portal.messages(line=1, chat_id="79001234567")[-1].text == "Thanks!"

        # the portal calls the handler twice for one message: sent once
        again = await portal.send_sms(SENDER, "+7 900 123 45 67", "second")
        assert again[1].status_code == 200
        await w.recorder.wait_count(2)
        assert w.recorder.texts("79001234567") == ["Your order is ready", "second"]


async def test_a_bad_number_fails_with_a_reason_and_sends_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sms, response = await w.portal.send_sms(SENDER, "call the office", "hello")
        assert response.status_code == 422
        assert "not a WhatsApp number" in response.json()["error"]
        assert sms.statuses == ["failed"]
        [notice] = w.portal.crm.notifications
        assert "call the office" in notice["MESSAGE"]
        run, reply = await w.portal.run_robot(
            SEND_ROBOT, {"phone": "12", "text": "hi", "channel": "wa"}
        )
        assert reply.status_code == 422
        assert run.returned is not None and run.returned["status"] == "failed"
        assert "digits" in run.returned["error"]
        assert w.recorder.received == []


async def test_a_forged_handler_call_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        real = w.portal.application_token
        w.portal.application_token = "0" * 32  # a caller who does not know the app's secret
        sms, response = await w.portal.send_sms(SENDER, "79001234567", "pay here")
        run, robot = await w.portal.run_robot(
            SEND_ROBOT, {"phone": "79001234567", "text": "pay here", "channel": "wa"}
        )
        w.portal.application_token = real
        assert (response.status_code, robot.status_code) == (401, 401)
        assert sms.statuses == [] and run.returned is None
        stats = await w.h.gateway.store.stats(time.time())
        assert all(s.ready == 0 and s.dead == 0 for s in stats)
        assert not [o for o in w.h.observer.of_type("accepted") if o.instance == "b24"]
        assert w.recorder.received == []


async def test_robot_sends_and_reports_the_whatsapp_id(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        run, reply = await w.portal.run_robot(
            SEND_ROBOT,
            {"phone": "+7 900 555-00-11", "text": "Hello from the deal", "channel": "wa"},
        )
        assert reply.status_code == 200, reply.text
        await w.recorder.wait_count(1)
        sent = w.recorder.received[0]
        await w.until(lambda: run.returned is not None)
        assert run.returned == {"status": "sent", "message_id": sent.native_id, "error": ""}


async def test_robot_waits_for_the_reply_or_times_out(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        provider: Any = w.h.gateway.instances["b24"]
        waiting, reply = await w.portal.run_robot(
            WAIT_ROBOT, {"phone": "79001234567", "channel": "wa", "timeout_minutes": "30"}
        )
        assert reply.status_code == 200, reply.text
        late, _ = await w.portal.run_robot(
            WAIT_ROBOT, {"phone": "79007654321", "channel": "wa", "timeout_minutes": "5"}
        )
        await w.channel(
            {
                "messages": [
                    {"id": "r1", "chat": "79001234567", "from": "79001234567", "text": "Yes"}
                ]
            }
        )
        await w.until(lambda: waiting.returned is not None)
        assert waiting.returned == {"status": "replied", "reply_text": "Yes", "message_id": "r1"}
        assert late.returned is None
        assert await provider.crm.robots.check_waiters(now=time.time() + 301) == 1
        assert late.returned == {"status": "timeout", "reply_text": "", "message_id": ""}


async def test_robot_writes_first_with_a_template_outside_the_24_hour_window(
    tmp_path: Path,
) -> None:
    cloud = FakeCloudApi()
    cloud.pair_interval = None
    for index in range(120):  # more than one page of message_templates (100 a page)
        cloud.register_template(f"filler_{index:03}", "en_US")
    cloud.register_template("order_ready", "ru", body_params=2)
    async with world(tmp_path, cloud) as w:
        # the robot offers the approved templates of the linked number
        channel: Any = w.h.gateway.instances["wa"]
        assert len(await channel.templates.sync()) == 121
        provider: Any = w.h.gateway.instances["b24"]
        # (the channel's own sync at start may have been in time for the link already)
        await provider.crm.refresh_templates([w.portal.member_id])
        offered = w.portal.crm.robots[SEND_ROBOT]["PROPERTIES"]["template"]
        assert offered["Type"] == "select"
        assert offered["Options"]["order_ready:ru"] == "order_ready (ru, 2)"
        assert await provider.crm.refresh_templates([w.portal.member_id]) == 0  # unchanged

        phone = "79001234567"  # never wrote: no window is open
        run, reply = await w.portal.run_robot(
            SEND_ROBOT,
            {
                "phone": "8 900 123-45-67",
                "text": "",
                "channel": "wa",
                "template": "order_ready",
                "template_params": ["Ivan", "A-1024"],
            },
        )
        assert reply.status_code == 200, reply.text
        await w.until(lambda: run.returned is not None)
        assert run.returned is not None and run.returned["status"] == "sent", run.returned
        [sent] = cloud.sent
        assert (sent.to, sent.type) == (phone, "template")
        template = sent.request["template"]
        assert template["name"] == "order_ready" and template["language"]["code"] == "ru"
        assert [p["text"] for p in template["components"][0]["parameters"]] == ["Ivan", "A-1024"]
        assert run.returned["message_id"] == sent.id

        # wrong parameters: refused before Meta is called, the reason in the robot's result
        bad, _ = await w.portal.run_robot(
            SEND_ROBOT,
            {"phone": phone, "channel": "wa", "template": "order_ready", "template_params": ["x"]},
        )
        await w.until(lambda: bad.returned is not None)
        assert bad.returned is not None and bad.returned["status"] == "failed"
        assert "takes 2 parameters, 1 given" in bad.returned["error"]

        # free text outside the window, no template configured: failed with Meta's reason
        text, _ = await w.portal.run_robot(
            SEND_ROBOT, {"phone": phone, "channel": "wa", "text": "are you there?"}
        )
        await w.until(lambda: text.returned is not None)
        assert text.returned is not None and text.returned["status"] == "failed"
        assert "24 hours" in text.returned["error"]
        assert len(cloud.sent) == 1


async def test_send_sms_names_a_template_on_its_first_line(tmp_path: Path) -> None:
    cloud = FakeCloudApi()
    cloud.pair_interval = None
    cloud.register_template("order_ready", "ru", body_params=2)
    async with world(tmp_path, cloud) as w:
        # "Send SMS" has only a text box: the first line names the template and its
        # parameters; the customer never wrote, so only a template can open the chat
        sms, response = await w.portal.send_sms(
            SENDER, "8 900 123-45-67", "#шаблон order_ready:ru | Иван | A-1024"
        )
        assert response.status_code == 200, response.text
        await w.until(lambda: sms.status == "sent")
        [sent] = cloud.sent
        assert (sent.to, sent.type) == ("79001234567", "template")
        template = sent.request["template"]
        assert template["name"] == "order_ready" and template["language"]["code"] == "ru"
        assert [p["text"] for p in template["components"][0]["parameters"]] == ["Иван", "A-1024"]

        # parameters that do not fit the approved template: failed with the reason, not sent
        bad, _ = await w.portal.send_sms(SENDER, "79001234567", "#template order_ready | x")
        await w.until(lambda: bad.statuses[-1:] == ["failed"])
        assert len(cloud.sent) == 1

        # a directive that cannot be read is refused at once with how to write it
        unreadable, refused = await w.portal.send_sms(SENDER, "79001234567", "#template Bad Name")
        assert refused.status_code == 422
        assert "#template name:language" in refused.json()["error"]
        assert unreadable.statuses == ["failed"]


async def test_unlink_removes_the_sender_and_robots_and_uninstall_refuses_calls(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        portal, h = w.portal, w.h
        registered = dict(portal.crm.senders[SENDER])
        # Repair runs the setup again: registration is reconciled, nothing doubles.
        provider: Any = h.gateway.instances["b24"]
        assert await provider.installer.run_setup(portal.member_id) is None
        assert list(portal.crm.senders) == [SENDER]
        assert set(portal.crm.robots) == {SEND_ROBOT, WAIT_ROBOT}

        page = await portal.open_connector_settings(line=1, activate=False)
        unlinked = await h.client.post(
            "/webhooks/b24/placement", data=form_fields(page.text, "unlink", "wa")
        )
        assert "Unlinked" in unlinked.text
        assert portal.crm.senders == {} and portal.crm.robots == {}

        # A call for the old sender (a CRM page opened before) fails with a reason.
        portal.crm.senders[SENDER] = registered
        sms, response = await portal.send_sms(SENDER, "79001234567", "hello")
        assert response.status_code == 422 and "not linked" in response.json()["error"]
        assert sms.statuses == ["failed"]

        await portal.uninstall()
        portal.crm.senders[SENDER] = registered
        late, refused = await portal.send_sms(SENDER, "79001234567", "hello")
        assert refused.status_code == 401 and late.statuses == []
        assert w.recorder.received == []


async def test_a_failed_status_call_is_retried_without_a_second_mirror(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        portal = w.portal
        status = "messageservice.message.status.update"
        portal.faults.fail_next(status, kind="500")  # the ack's status call
        sms, response = await portal.send_sms(SENDER, "+7 900 123 45 67", "Your order is ready")
        assert response.status_code == 200, response.text
        await w.until(lambda: sms.status == "sent" and bool(portal.messages(line=1)))
        assert sms.statuses == ["sent"]
        assert [c.status for c in portal.calls_to(status)] == [500, 200]
        assert len(portal.messages(line=1, chat_id="79001234567")) == 1


async def test_a_russian_portal_is_told_in_russian(tmp_path: Path) -> None:
    async with world(tmp_path, language="ru") as w:
        robot = w.portal.crm.robots[SEND_ROBOT]
        assert robot["NAME"]["ru"] == "Отправить сообщение WhatsApp"
        _, response = await w.portal.send_sms(SENDER, "позвоните в офис", "hello")
        assert response.status_code == 422
        [notice] = w.portal.crm.notifications
        assert notice["MESSAGE"].startswith("Сообщение WhatsApp на номер")
        sms, _ = await w.portal.send_sms(SENDER, "79001234567", "Заказ готов")
        await w.until(lambda: sms.status == "sent")
        [mirrored] = w.portal.messages(line=1, chat_id="79001234567")
        assert mirrored.text.startswith("[i]Отправлено из CRM через WhatsApp[/i]")
