"""The provider inside a running gateway (in process), against the fake portal."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from gateway_bitrix24.provider import Bitrix24Provider
from gateway_fakes.bitrix24 import FakePortal

from gateway.errors import BadRequest, PermanentError
from gateway.hookspecs import hookimpl
from gateway.models import AccountState, AccountStatus
from gateway.providers import (
    ChannelProvider,
    Outcome,
    Outgoing,
    Provider,
    WebhookRequest,
    WebhookResult,
)
from tests.plugins.bitrix24.support import (
    FILE_FAILURES,
    PUBLIC,
    Setup,
    form,
    running,
)

pytestmark = pytest.mark.anyio

QR = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class QrChannel(ChannelProvider):
    """A channel whose account waits for its QR code to be scanned."""

    name: ClassVar[str] = "qr-channel"

    async def account_state(self) -> AccountState:
        return AccountState(AccountStatus.NEEDS_QR, "scan the code", qr=QR)

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        raise BadRequest("not used")

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return [PermanentError("offline")] * len(batch)


class QrPlugin:
    __name__ = "qr-plugin"

    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(QrChannel)


async def wait_dead(s: Setup, count: int) -> list[dict[str, Any]]:
    await s.h.observer.wait_for("dead_lettered", count)
    admin = {"Authorization": "Bearer admin-secret"}
    body = (await s.h.client.get("/admin/dead-letters", headers=admin)).json()
    return body if isinstance(body, list) else body["dead_letters"]


async def test_api_only_app_installs_from_onappinstall(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        response = await s.portal.install(f"{PUBLIC}/webhooks/b24/install", ui=False)
        assert response.status_code == 200
        record = await s.provider.store.get(s.portal.member_id)
        assert record is not None and record.application_token == s.portal.application_token
        assert "whatschat" in s.portal.state.connectors
        assert len(s.portal.state.bindings) == 9
        state = await s.provider.account_state()
        assert state.status is AccountStatus.CONNECTED and "acme.bitrix24.com" in (
            state.detail or ""
        )


async def test_reinstall_reconciles_handlers_and_reactivates_lines(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        s.portal.state.bindings[0].handler = "https://old.example.com/webhooks/b24/events"
        s.portal.state.statuses.clear()  # a reinstall wipes line statuses
        await s.install()
        handlers = {b.handler for b in s.portal.state.bindings}
        assert handlers == {f"{PUBLIC}/webhooks/b24/events"} and len(s.portal.state.bindings) == 9
        assert s.portal.state.statuses[("whatschat", 1)].ok


@pytest.mark.parametrize(
    "change",
    [{"REFRESH_ID": "forged-refresh"}, {"member_id": "f" * 32}],
)
async def test_forged_installs_are_refused(tmp_path: Path, change: dict[str, str]) -> None:
    async with running(tmp_path) as s:
        pair = s.portal.issue_tokens()
        body = {
            "AUTH_ID": pair.access_token,
            "REFRESH_ID": pair.refresh_token,
            "APPLICATION_TOKEN": "attacker-chosen",
            "member_id": s.portal.member_id,
            "SERVER_ENDPOINT": "https://oauth.evil.example/rest/",
            **change,
        }
        response = await s.h.client.post(
            "/webhooks/b24/install?DOMAIN=acme.bitrix24.com", data=body
        )
        assert response.status_code == 403
        assert await s.provider.store.all() == []


async def test_portals_outside_allowed_portals_cannot_install(tmp_path: Path) -> None:
    async with running(tmp_path, allowed_portals=["other.bitrix24.com"]) as s:
        response = await s.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert response.status_code == 403 and "allowed_portals" in response.text
        assert await s.provider.store.all() == []


async def test_settings_page_needs_a_working_session_and_a_signed_form(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        page = await s.settings_page()
        assert (
            "frame-ancestors https://acme.bitrix24.com"
            in ((await s.portal.open_connector_settings(line=1)).headers["content-security-policy"])
        )
        fields = form(page, "link", "wa")
        token = fields["form_token"]
        # One hex digit of the signature changed (a fixed "00" would be no change at all
        # for the one signature in 256 that ends so).
        tampered = {**fields, "form_token": token[:-1] + ("1" if token.endswith("0") else "0")}
        response = await s.h.client.post("/webhooks/b24/placement", data=tampered)
        assert response.status_code == 403
        forged = {
            "AUTH_ID": "not-a-token",
            "member_id": s.portal.member_id,
            "PLACEMENT": "SETTING_CONNECTOR",
            "PLACEMENT_OPTIONS": '{"CONNECTOR": "whatschat", "LINE": "1"}',
        }
        response = await s.h.client.post("/webhooks/b24/placement", data=forged)
        assert response.status_code == 403
        assert not [r for r in await s.h.gateway.routes() if r.crm == "b24"]


async def test_settings_page_shows_channel_states_and_guards_links(tmp_path: Path) -> None:
    channels = {"wa2": {"provider": "qr-channel"}}
    async with running(tmp_path, plugins=[QrPlugin()], channels=channels) as s:
        await s.install()
        page = await s.settings_page(line=1)
        assert f'<img class="qr" alt="QR code" src="{QR}">' in page
        assert "needs the QR code scanned" in page
        await s.link(1, "wa")
        line2 = s.portal.add_line("Support")
        page = await s.settings_page(line=line2)
        assert "linked to open line 1" in page  # wa is taken; not offered here
        response = await s.press(page, "link", "wa2")
        assert "Linked wa2" in response.text
        # the page of line 1 offers no second link while one is active
        page = await s.settings_page(line=1)
        with pytest.raises(AssertionError):
            form(page, "link", "wa2")


async def test_inactive_line_is_parked_visibly_and_relinking_resumes(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        s.portal.state.lines[1].active = False  # switched off in Bitrix24
        await s.customer("m1", "anyone?")
        [dead] = await wait_dead(s, 1)
        assert "NOT_ACTIVE_LINE" in dead["last_error"]
        state = await s.provider.account_state()
        assert state.status is AccountStatus.ERROR and "line 1: NOT_ACTIVE_LINE" in (
            state.detail or ""
        )
        sends = len(s.portal.calls_to("imconnector.send.messages"))
        await s.customer("m2", "hello?")
        await wait_dead(s, 2)
        assert len(s.portal.calls_to("imconnector.send.messages")) == sends  # parked: not tried
        s.portal.state.lines[1].active = True
        page = await s.settings_page()
        assert "Deliveries to this line are paused" in page
        response = await s.press(page, "link", "wa")
        assert "Reconnected wa" in response.text
        assert len([r for r in await s.h.gateway.routes() if r.crm == "b24"]) == 1
        await s.customer("m3", "back")
        await s.h.observer.wait_for("delivered", 1)
        assert [m.text for m in s.portal.messages()] == ["back"]
        assert (await s.provider.account_state()).status is AccountStatus.CONNECTED


async def test_refused_refresh_shows_as_needs_reinstall_in_admin_and_metrics(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        record = await s.provider.store.get(s.portal.member_id)
        assert record is not None
        s.portal.tokens.use_refresh(record.refresh_token)
        s.portal.expire_tokens()
        await s.customer("m1", "hello")
        [dead] = await wait_dead(s, 1)
        assert "reinstall" in dead["last_error"]
        admin = {"Authorization": "Bearer admin-secret"}
        instances = (await s.h.client.get("/admin/instances", headers=admin)).json()["instances"]
        assert [i["state"] for i in instances if i["name"] == "b24"] == ["needs_reinstall"]
        metrics = (await s.h.client.get("/metrics")).text
        assert 'gateway_account_state{instance="b24",state="needs_reinstall"} 1' in metrics


async def test_idle_portals_are_refreshed_in_the_background(tmp_path: Path) -> None:
    async with running(tmp_path, idle_refresh_days=7) as s:
        await s.install()
        assert await s.provider.refresh_idle(now=time.time() + 86400) == []
        before = sum(1 for t in s.portal.tokens.refresh.values() if t.used)
        assert await s.provider.refresh_idle(now=time.time() + 8 * 86400) == [s.portal.member_id]
        assert sum(1 for t in s.portal.tokens.refresh.values() if t.used) == before + 1
        assert await s.provider.refresh_idle(now=time.time() + 6 * 86400) == []  # just done


async def test_settings_routes_are_activated_at_start(tmp_path: Path) -> None:
    portal = FakePortal(installed=False)
    line = portal.add_line("Sales")
    async with running(tmp_path, portal=portal) as s:
        await s.install()
    routes = {"sales": {"channel": "wa", "crm": "b24", "target": f"{portal.member_id}/{line}"}}
    async with running(tmp_path, portal=portal, routes=routes) as s:
        assert s.provider.startup is not None
        await s.provider.startup
        assert portal.state.statuses[("whatschat", line)].ok
        page = await s.settings_page(line=line)
        assert "set in settings.toml" in page
        await s.customer("m1", "hi sales")
        await s.h.observer.wait_for("delivered", 1)
        assert [m.line for m in portal.messages()] == [line]


async def test_deleted_line_and_uninstall_drop_routes(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        emission = await s.portal.delete_line(1)
        assert [r.status_code for r in emission.responses] == [200]
        assert not [r for r in await s.h.gateway.routes() if r.crm == "b24"]
        [uninstall] = await s.portal.uninstall()
        assert uninstall.status == 200
        assert await s.provider.store.all() == []


async def test_other_connectors_and_bad_requests(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        await s.customer("m1", "hi")
        await s.h.observer.wait_for("delivered", 1)
        data = {
            "CONNECTOR": "someone_else",
            "LINE": "1",
            "MESSAGES": [
                {
                    "im": {"chat_id": 1, "message_id": 5},
                    "message": {"text": "x"},
                    "chat": {"id": "7999"},
                }
            ],
        }
        [delivery] = await s.portal.emit("ONIMCONNECTORMESSAGEADD", data)
        assert delivery.response is not None
        assert delivery.response.json() == {"ok": True, "accepted": 0, "duplicates": 0}
        assert s.recorder.received == []
        assert (await s.h.client.get("/webhooks/b24/events")).status_code == 405
        assert (await s.h.client.post("/webhooks/b24/nowhere")).status_code == 404
        response = await s.h.client.post("/webhooks/b24/events", content=b"no-event=1")
        assert response.status_code == 400


async def test_app_page_lists_lines_and_repairs_the_setup(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        s.portal.state.connectors.clear()  # someone removed the connector
        response = await s.portal.open_placement(f"{PUBLIC}/webhooks/b24/placement", "DEFAULT")
        assert response.status_code == 200
        assert "open line 1: <b>wa</b>" in response.text
        assert f"{s.portal.member_id}/&lt;line id&gt;" in response.text
        repaired = await s.press(response.text, "setup")
        assert "The connector setup was repeated." in repaired.text
        assert "whatschat" in s.portal.state.connectors
        assert s.portal.state.statuses[("whatschat", 1)].ok


def test_settings_are_validated() -> None:
    good = {"client_id": "local.1", "client_secret": "s"}
    assert Bitrix24Provider.validate_settings(good) == []
    problems = Bitrix24Provider.validate_settings(
        {
            "client_id": "",
            "connector_id": "acme.wa",
            "rate": 0,
            "oauth_url": "http://plain.example/",
            "allowed_portals": "acme",
        }
    )
    keys = [key for key, _, _ in problems]
    assert keys == [
        "client_id",
        "client_secret",
        "connector_id",
        "rate",
        "oauth_url",
        "allowed_portals",
    ]


async def test_files_are_rehosted_and_a_lost_one_is_named_in_the_text(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        FILE_FAILURES[:] = [503]  # the provider's file host hiccups once
        url = "https://files.test/offer.pdf"
        await s.customer("m1", "the offer", attachments=[{"kind": "document", "url": url}])
        await s.customer(
            "m2",
            "and the old one",
            attachments=[{"kind": "document", "url": "https://files.test/gone.pdf"}],
        )
        await s.h.observer.wait_for("delivered", 2)
        first, second = s.portal.messages()
        assert first.text == "the offer"  # retried, still first: order kept
        [entry] = first.files
        assert entry["url"].startswith(f"{PUBLIC}/media/") and entry["name"] == "offer.pdf"
        assert entry["type"] == "application/pdf"
        assert second.files == []
        assert second.text.startswith(
            "and the old one\n[i](document: the file could not be passed on:"
        )
        assert "HTTP 404" in second.text
        # m1 was retried; m2 too if one claim took both (then held behind m1), else it
        # was claimed once m1 was through: either way after it.
        assert len(s.h.observer.of_type("retried")) >= 1
