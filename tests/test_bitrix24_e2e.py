"""Bitrix24 Open Lines end to end, over real HTTP, against the fake portal.

The gateway runs on real uvicorn; the fake portal posts its install page, placement frames
and events over a real `httpx.AsyncClient` whose transport sends the gateway's public host
(`gw.example.com`, what the plugin registers as handler URLs) to the harness's loopback URL.
The gateway's own outbound calls reach the portal, its OAuth server, the test channel's
recorder and a file host through the test kit's fake network.
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
from gateway_fakes.bitrix24.formdata import php_form_encode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.models import AccountState, AccountStatus, InboundEvent
from gateway.testing import GatewayHarness, Recorder, ToGateway, running_gateway

pytestmark = pytest.mark.anyio

PUBLIC = "https://gw.example.com"
CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
CHAT = "79991234567"
EVENTS = {
    "ONIMCONNECTORMESSAGEADD",
    "ONIMCONNECTORMESSAGEUPDATE",
    "ONIMCONNECTORMESSAGEDELETE",
    "ONIMCONNECTORDIALOGSTART",
    "ONIMCONNECTORDIALOGFINISH",
    "ONIMCONNECTORSTATUSDELETE",
    "ONIMCONNECTORLINEDELETE",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
}


class Gate:
    """Holds the portal's message calls while closed, so a backlog builds up behind them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.opened = asyncio.Event()
        self.opened.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and ("send.messages" in path or path.endswith("/batch")):
            await self.opened.wait()
        await self.app(scope, receive, send)


class PortalClock:
    """The portal's clock: `speed` times real time, and able to stand still while held."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.started = time.monotonic()
        self.held_at: float | None = None

    def __call__(self) -> float:
        return self.held_at if self.held_at is not None else self._running()

    def _running(self) -> float:
        return self.started + (time.monotonic() - self.started) * self.speed

    def hold(self) -> None:
        self.held_at = self._running()

    def release(self) -> None:
        self.held_at = None


async def _file(request: Request) -> Response:
    name = request.path_params["name"]
    return Response(f"contents of {name}".encode(), media_type="application/pdf")


FILES = Starlette(routes=[Route("/{name}", _file)])


def settings(tmp_path: Path, concurrency: int = 4, **b24: Any) -> dict[str, Any]:
    portal = FakePortal()
    return {
        "public_url": PUBLIC,
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": "admin-secret"},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 10, "jitter": 0.0},
        "workers": {"poll_interval": 0.05, "concurrency": concurrency},
        "channels": {
            name: {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": f"{name}-token",
            }
            for name in ("wa", "wa2")
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
                "connector_id": "whatschat",
                "connector_name": "WhatsApp (Acme)",
                **b24,
            }
        },
    }


@dataclass
class World:
    h: GatewayHarness
    portal: FakePortal
    recorder: Recorder
    gate: Gate

    async def until(self, predicate: Callable[[], bool], within: float = 15.0) -> None:
        """Wait for `predicate`, woken by each pipeline observation (no polling sleeps)."""
        async with asyncio.timeout(within):
            while not predicate():
                await _next_observation(self.h)

    async def customer(self, *messages: dict[str, Any]) -> None:
        response = await self.h.client.post(
            "/webhooks/wa", json={"messages": list(messages)}, headers=CHANNEL_AUTH
        )
        assert response.status_code == 200, response.text


async def _next_observation(h: GatewayHarness) -> None:
    """Return at the next pipeline observation of a common kind."""
    kinds = {"delivered", "accepted", "retried", "dead_lettered", "duplicate"}
    waits = [
        asyncio.ensure_future(
            h.observer.wait_for(kind, len(h.observer.of_type(kind)) + 1, timeout=30)
        )
        for kind in kinds
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


@asynccontextmanager
async def world(
    tmp_path: Path,
    *,
    portal_options: dict[str, Any] | None = None,
    concurrency: int = 4,
    **b24: Any,
) -> AsyncIterator[World]:
    recorder = Recorder(name="wa")
    to_gateway = ToGateway()
    async with httpx.AsyncClient(transport=to_gateway, timeout=30.0) as portal_http:
        portal = FakePortal(http=portal_http, installed=False, **(portal_options or {}))
        gate = Gate(portal.app)
        apps = {
            "acme.bitrix24.com": gate,
            "oauth.bitrix.info": portal.oauth_app,
            "channel.test": recorder.app,
            "files.test": FILES,
        }
        async with running_gateway(
            settings(tmp_path, concurrency, **b24), apps=apps, serve_http=True
        ) as h:
            assert h.url is not None
            to_gateway.target = httpx.URL(h.url)
            yield World(h, portal, recorder, gate)


async def install_and_link(w: World) -> None:
    response = await w.portal.install(f"{PUBLIC}/webhooks/b24/install")
    assert response.status_code == 200, response.text
    assert "BX24.installFinish()" in response.text
    w.portal.finish_install()
    await link(w, 1, "wa")


async def link(
    w: World, line: int, channel: str, expect: str = "Linked {} to this open line."
) -> None:
    page = await w.portal.open_connector_settings(line=line)
    assert page.status_code == 200, page.text
    linked = await w.h.client.post(
        "/webhooks/b24/placement", data=form_fields(page.text, "link", channel)
    )
    assert expect.format(channel) in linked.text, linked.text


def rest_requests(portal: FakePortal) -> list[Any]:
    """HTTP requests the portal received (a batch is one, whatever it carries)."""
    return [c for c in portal.calls if c.batch_key is None]


async def test_install_link_converse_unlink_uninstall(tmp_path: Path) -> None:
    async with world(tmp_path, portal_options={"fetch_files": True}) as w:
        portal, h = w.portal, w.h
        provider = h.gateway.instances["b24"]

        # install: tokens stored, connector registered, events bound, in few calls
        await install_and_link(w)
        connector = portal.state.connectors["whatschat"]
        assert connector.placement_handler == f"{PUBLIC}/webhooks/b24/placement"
        assert connector.name == "WhatsApp (Acme)"
        assert connector.chat_group is False and connector.need_signature is True
        bound = {(b.event, b.handler) for b in portal.state.bindings}
        assert bound == {(event, f"{PUBLIC}/webhooks/b24/events") for event in EVENTS}
        batches = [c.params["cmd"] for c in portal.calls_to("batch", include_batch=False)]
        assert len([b for b in batches if "event.bind" in str(b)]) == 1  # one for every event
        record = await provider.store.get(portal.member_id)
        assert record is not None and record.application_token == portal.application_token
        assert record.client_endpoint == "https://acme.bitrix24.com/rest/"

        # linked from the settings page: line active, route stored
        status = portal.state.statuses[("whatschat", 1)]
        assert status.ok and status.data["name"] == "WhatsApp (wa)"
        routes = [r for r in await h.gateway.routes() if r.crm == "b24"]
        assert [(r.channel, r.target) for r in routes] == [("wa", f"{portal.member_id}/1")]
        assert (await provider.account_state()).status is AccountStatus.CONNECTED

        # client -> operator: text with formatting, a file re-hosted for the portal
        await w.customer(
            {
                "id": "m1",
                "chat": CHAT,
                "from": CHAT,
                "name": "Ivan Petrov 😀",
                "text": "Hello *there*",
            },
            {
                "id": "m2",
                "chat": CHAT,
                "from": CHAT,
                "name": "Ivan Petrov",
                "text": "the offer",
                "attachments": [{"kind": "document", "url": "https://files.test/offer.pdf"}],
            },
        )
        await w.until(lambda: len(portal.messages(line=1, chat_id=CHAT)) == 2)
        first, second = portal.messages(line=1, chat_id=CHAT)
        assert (first.text, first.author, first.external_ids) == (
            "Hello [b]there[/b]",
            "client",
            ["m1"],
        )
        assert first.user["name"] == "Ivan" and first.user["last_name"] == "Petrov"
        assert first.user["phone"] == f"+{CHAT}"
        assert second.text == "the offer" and len(second.files) == 1
        assert second.files[0]["url"].startswith(f"{PUBLIC}/media/")  # fetched by the portal
        started = await portal.flush()  # the first message opened a session
        assert [(d.event, d.status) for d in started] == [("ONIMCONNECTORDIALOGSTART", 200)]
        route = routes[0].name
        mapping = await h.gateway.store.lookup_by_source(route, "wa", "m1")
        assert mapping is not None and mapping.destination_id == "m1"
        chat = portal.state.chats[("whatschat", 1, CHAT)]
        assert mapping.extra["destination"]["session_id"] == str(chat.sessions[0].id)
        assert mapping.extra["destination"]["bitrix_chat_id"] == str(chat.bitrix_chat_id)

        # the customer edits one message, deletes the other, and quotes
        edits = {
            "edits": [{"id": "m1", "chat": CHAT, "text": "Hello *everyone*"}],
            "deletes": [{"id": "m2", "chat": CHAT}],
        }
        assert (await h.client.post("/webhooks/wa", json=edits, headers=CHANNEL_AUTH)).is_success
        await w.until(lambda: first.text == "Hello [b]everyone[/b]" and second.deleted)
        await w.customer({"id": "m3", "chat": CHAT, "from": CHAT, "text": "ok", "quote": "m1"})
        await w.until(lambda: len(portal.messages(line=1, chat_id=CHAT)) == 2)
        # The quote shows the text the gateway delivered first (the id map keeps its start).
        assert portal.messages(chat_id=CHAT)[-1].text == ">>Hello [b]there[/b]\nok"

        # operator -> client, then the delivery ack clears the spinner
        emission = await portal.operator_writes(1, CHAT, "Hi [b]Ivan[/b]", files=["price.pdf"])
        assert [r.status_code for r in emission.responses] == [200]
        await w.recorder.wait_count(1)
        sent = w.recorder.received[0]
        assert (sent.conversation, sent.text) == (CHAT, "*Anna:*\nHi *Ivan*")
        [attachment] = sent.item["attachments"]
        assert attachment["url"].startswith("https://acme.bitrix24.com/rest/download.json?token=")
        message = emission.message
        assert message is not None
        await w.until(lambda: not message.sending)
        assert message.external_ids == [sent.native_id] and message.delivered
        [ack] = portal.calls_to("imconnector.send.status.delivery")
        [item] = ack.params["MESSAGES"]
        assert item["im"] == {
            "chat_id": message.bitrix_chat_id,
            "message_id": message.im_message_id,
        }
        assert item["message"]["id"] == [sent.native_id] and item["chat"] == {"id": CHAT}

        # WhatsApp says read: status.reading with the same im block
        await h.client.post(
            "/webhooks/wa",
            json={"statuses": [{"id": sent.native_id, "status": "read", "chat": CHAT}]},
            headers=CHANNEL_AUTH,
        )
        await w.until(lambda: bool(portal.calls_to("imconnector.send.status.reading")))
        [reading] = portal.calls_to("imconnector.send.status.reading")
        assert reading.params["MESSAGES"][0]["im"]["message_id"] == message.im_message_id
        # ... and the WhatsApp id in message.id, as status.delivery carries it
        assert reading.params["MESSAGES"][0]["message"]["id"] == [sent.native_id]

        # operator edits and deletes the acknowledged message
        edit = await portal.operator_edits(message, "Hi Ivan, corrected")
        assert [r.status_code for r in edit.responses] == [200]
        await w.recorder.wait_count(2)
        edited = w.recorder.received[1]
        assert (edited.kind, edited.item["target"], edited.text) == (
            "edit",
            sent.native_id,
            "*Anna:*\nHi Ivan, corrected",
        )
        delete = await portal.operator_deletes(message)
        assert [r.status_code for r in delete.responses] == [200]
        await w.recorder.wait_count(3)
        assert (w.recorder.received[2].kind, w.recorder.received[2].item["target"]) == (
            "delete",
            sent.native_id,
        )

        # unlink from the settings page: route gone, connector off, STATUSDELETE handled
        page = await portal.open_connector_settings(line=1, activate=False)
        unlinked = await h.client.post(
            "/webhooks/b24/placement", data=form_fields(page.text, "unlink", "wa")
        )
        assert "Unlinked" in unlinked.text
        assert ("whatschat", 1) not in portal.state.statuses
        assert not [r for r in await h.gateway.routes() if r.crm == "b24"]
        deliveries = await portal.flush()
        assert [(d.event, d.status) for d in deliveries] == [("ONIMCONNECTORSTATUSDELETE", 200)]

        # uninstall: tokens dropped, state visible
        [uninstall] = await portal.uninstall()
        assert uninstall.status == 200
        assert await provider.store.get(portal.member_id) is None
        state = (
            await h.client.get("/admin/instances", headers={"Authorization": "Bearer admin-secret"})
        ).json()
        [b24] = [i for i in state["instances"] if i["name"] == "b24"]
        assert b24["state"] == "disconnected"


async def test_refused_reply_is_explained_in_the_chat(tmp_path: Path) -> None:
    async with world(tmp_path, strip_operator_name=True) as w:
        await install_and_link(w)
        chat = "reject-1"  # the recorder refuses to deliver to it, like a closed 24 h window
        await w.customer({"id": "r1", "chat": chat, "from": chat, "name": "Olga", "text": "hi"})
        await w.until(lambda: len(w.portal.messages(chat_id=chat)) == 1)
        await w.portal.operator_writes(1, chat, "Our offer")
        await w.until(lambda: len(w.portal.messages(chat_id=chat)) == 3)
        note = w.portal.messages(chat_id=chat)[-1]
        assert note.author == "client"  # Bitrix24 does not echo these to the connector
        assert note.text.startswith("[b]⚠ Not delivered to WhatsApp[/b]: recipient refuses")
        assert ">>Our offer" in note.text
        assert w.portal.messages(chat_id=chat)[1].sending  # no false delivery ack


async def test_a_russian_portal_gets_its_notices_in_russian(tmp_path: Path) -> None:
    async with world(tmp_path, strip_operator_name=True) as w:
        w.portal.app_record.language_id = "ru"  # LANG of the pages, app.info's LANGUAGE_ID
        response = await w.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert '<html lang="ru">' in response.text
        assert "Установлено на acme.bitrix24.com." in response.text
        w.portal.finish_install()
        page = await w.portal.open_connector_settings(line=1)
        assert "WhatsApp в открытой линии 1" in page.text and ">Подключить</button>" in page.text
        await link(w, 1, "wa", expect="{} подключён к этой открытой линии.")
        chat = "reject-2"
        await w.customer(
            {"id": "r2", "chat": chat, "from": chat, "text": "hi", "forwarded": True},
        )
        await w.until(lambda: len(w.portal.messages(chat_id=chat)) == 1)
        assert w.portal.messages(chat_id=chat)[0].text == "[i]Переслано[/i]\nhi"
        await w.portal.operator_writes(1, chat, "Our offer")
        await w.until(lambda: len(w.portal.messages(chat_id=chat)) == 3)
        note = w.portal.messages(chat_id=chat)[-1]
        assert note.text.startswith("[b]⚠ Не доставлено в WhatsApp[/b]: recipient refuses")


async def test_forged_events_are_refused_and_stored_nowhere(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await install_and_link(w)
        await w.customer({"id": "f1", "chat": CHAT, "from": CHAT, "text": "hello"})
        await w.until(lambda: len(w.portal.messages(chat_id=CHAT)) == 1)
        chat = w.portal.state.chats[("whatschat", 1, CHAT)]
        accepted = len(w.h.observer.of_type("accepted"))

        def forged(**auth: str) -> str:
            data = {
                "CONNECTOR": "whatschat",
                "LINE": "1",
                "MESSAGES": [
                    {
                        "im": {"chat_id": chat.bitrix_chat_id, "message_id": 99999},
                        "message": {"user_id": 1, "text": "send me your card number"},
                        "chat": {"id": CHAT},
                    }
                ],
            }
            body = {"event": "ONIMCONNECTORMESSAGEADD", "data": data, "ts": int(time.time())}
            body["auth"] = {**w.portal.event_auth(tokens=False), **auth}
            return httpx.QueryParams(php_form_encode(body)).__str__()

        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        for auth in (
            {"application_token": "0" * 32},
            {"member_id": "f" * 32},
            {"application_token": ""},
        ):
            response = await w.h.client.post(
                "/webhooks/b24/events", content=forged(**auth), headers=headers
            )
            assert response.status_code in (401, 403), response.text
        hostile = "data" + "[a]" * 40 + "=1"
        response = await w.h.client.post("/webhooks/b24/events", content=hostile, headers=headers)
        assert response.status_code == 400
        assert len(w.h.observer.of_type("accepted")) == accepted
        assert w.recorder.received == []
        stats = await w.h.gateway.store.stats(w.h.gateway.clock())
        assert all(s.ready == 0 for s in stats)


async def test_expired_token_is_refreshed_once_mid_run(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await install_and_link(w)
        used_before = sum(1 for t in w.portal.tokens.refresh.values() if t.used)
        w.portal.faults.fail_next("imconnector.send.messages", kind="expired_token")
        await w.customer({"id": "e1", "chat": CHAT, "from": CHAT, "text": "still there?"})
        await w.until(lambda: len(w.portal.messages(chat_id=CHAT)) == 1)
        sends = w.portal.calls_to("imconnector.send.messages")
        assert [c.error for c in sends] == ["expired_token", None]
        assert sends[0].token != sends[1].token
        assert sum(1 for t in w.portal.tokens.refresh.values() if t.used) == used_before + 1
        assert not w.h.observer.of_type("retried")  # refreshed inside the same attempt


async def test_backlog_of_2000_reaches_the_line_in_order(tmp_path: Path) -> None:
    # The portal's clock runs 20x real time, so its 2 req/s are 40 real ones; the gateway's
    # bucket is set to that real-time rate (it measures real time).
    speed = 20.0
    clock = PortalClock(speed)

    # One delivery slot: it takes up to 50 jobs of both lines per claim (several slots would
    # each end up leasing one line's conversations).
    options = {"clock": clock}
    async with world(
        tmp_path, portal_options=options, concurrency=1, rate=2.0 * speed, burst=50
    ) as w:
        await install_and_link(w)
        await link(w, w.portal.add_line("Second line"), "wa2")
        chats = [f"7900000{n:04d}" for n in range(20)]
        before = len(rest_requests(w.portal))
        w.gate.opened.clear()  # the first calls hang: a backlog builds up behind them

        async def post(channel: str, numbers: range) -> None:
            body = [
                {"id": f"b{i}", "chat": chats[i % 20], "from": chats[i % 20], "text": f"n{i}"}
                for i in numbers
            ]
            response = await w.h.client.post(
                f"/webhooks/{channel}",
                json={"messages": body},
                headers={"Authorization": f"Bearer {channel}-token"},
            )
            assert response.json()["accepted"] == len(body)

        for start in range(0, 2000, 50):
            # Even chats write to the number on line 1, odd ones to the number on line 2;
            # each chat's messages arrive in order, the two numbers' webhooks in parallel.
            await asyncio.gather(
                post("wa", range(start, start + 50, 2)),
                post("wa2", range(start + 1, start + 50, 2)),
            )
        # Another app on the same server IP has just filled the portal's bucket. The portal's
        # clock stands still until the gateway has been refused: on a slow machine the gateway's
        # next call could otherwise come after the bucket has drained by one.
        other = w.portal.issue_tokens().access_token
        clock.hold()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=w.portal.app), base_url="https://acme.bitrix24.com"
        ) as client:
            while w.portal.bucket is not None and w.portal.bucket.level < w.portal.bucket.burst:
                await client.post("/rest/app.info", json={"auth": other})

        def limited() -> list[Any]:
            requests = [c for c in rest_requests(w.portal)[before:] if c.token != other]
            return [c for c in requests if c.error == "QUERY_LIMIT_EXCEEDED"]

        w.gate.opened.set()
        await w.until(lambda: bool(limited()))
        clock.release()
        await w.until(lambda: len(w.portal.messages()) == 2000, within=60)
        messages = w.portal.messages()
        assert {m.line for m in messages if int(m.chat_id) % 2} == {2}
        ids = [m.external_ids[0] for m in messages]
        assert len(set(ids)) == 2000  # no duplicate
        for chat in chats:
            numbers = [int(m.text[1:]) for m in messages if m.chat_id == chat]
            assert numbers == sorted(numbers) and len(numbers) == 100
        requests = [c for c in rest_requests(w.portal)[before:] if c.token != other]
        assert len(requests) < 150, f"{len(requests)} REST requests for 2000 messages"
        assert any(c.method == "batch" for c in requests)  # both lines in one request
        assert not w.h.observer.of_type("dead_lettered")


async def test_a_number_that_stops_working_is_announced_once_and_again_when_back(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        w.portal.app_record.language_id = "ru"
        response = await w.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert response.status_code == 200
        w.portal.finish_install()
        await link(w, 1, "wa", expect="{} подключён к этой открытой линии.")
        notes = w.portal.crm.notifications

        async def state(status: AccountStatus, key: str) -> None:
            await w.h.gateway.emit("wa", [InboundEvent(key, AccountState(status))])

        await state(AccountStatus.CONNECTED, "s0")
        assert notes == []  # connected from the start: nothing to tell
        await state(AccountStatus.NEEDS_QR, "s1")
        [down] = notes
        # The admin who linked the number (the fake portal's user 1), in Russian.
        assert down["USER_ID"] == 1 and down["TAG"] == "whatschat|wa"
        assert down["MESSAGE"].startswith("⚠ Номер WhatsApp wa: нужно отсканировать QR-код.")
        await state(AccountStatus.NEEDS_QR, "s2")  # the next poll says the same
        # The settings page shows a banner while it lasts.
        page = await w.portal.open_connector_settings(line=1)
        assert 'class="notice error banner"' in page.text and "⚠ wa:" in page.text
        await state(AccountStatus.STARTING, "s3")  # not yet clear: nothing
        assert len(notes) == 1
        await state(AccountStatus.CONNECTED, "s4")
        assert notes[-1]["MESSAGE"] == "✅ Номер WhatsApp wa снова подключён: сообщения идут."
        assert len(notes) == 2

        # The app's page chooses who is told instead.
        app = await w.portal.open_placement(f"{PUBLIC}/webhooks/b24/placement", "DEFAULT")
        saved = await w.h.client.post(
            "/webhooks/b24/placement",
            data={**form_fields(app.text, "alerts"), "alert_users": "7, 9"},
        )
        assert "уведомления получат пользователи 7, 9" in saved.text
        await state(AccountStatus.BANNED, "s5")
        assert [n["USER_ID"] for n in notes[2:]] == [7, 9]
        assert "заблокирован WhatsApp" in notes[-1]["MESSAGE"]
