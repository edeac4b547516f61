"""The settings page lists numbers by phone number and account name, with their provider and
state, and refreshes itself (a guarded JSON endpoint) until every number is connected."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from gateway_bitrix24.line_page import format_phone, number_label
from gateway_fakes.greenapi import FakeGreenApi

from gateway.models import AccountState, AccountStatus
from gateway.testing.fake_common import ManualClock

from .support import form, running

pytestmark = pytest.mark.anyio

GREEN = {
    "wa_green": {
        "provider": "greenapi",
        "api_url": "https://api.green-api.test",
        "id_instance": "1101000001",
        "api_token": "fake0green0api0token",
        "webhook_token": "green-hook-token-0123456789",
    }
}


def qr_of(text: str) -> str:
    found = re.search(r'<img class="qr" alt="[^"]*" src="([^"]*)"', text)
    assert found, text
    return found.group(1)


def test_labels_say_phone_number_and_account_name() -> None:
    assert format_phone("79876543210") == "+7 987 654-32-10"
    assert format_phone("15550783881") == "+15550783881"
    both = AccountState(AccountStatus.CONNECTED, phone="79876543210", name="Shop")
    assert number_label("wa_green", both) == "+7 987 654-32-10 · Shop"
    assert number_label("wa_green", AccountState(AccountStatus.NEEDS_QR)) == "wa_green"


async def test_numbers_by_phone_with_provider_and_a_state_that_refreshes(tmp_path: Path) -> None:
    clock = ManualClock()
    green = FakeGreenApi(state="notAuthorized", me="79876543210", clock=clock, qr_refresh=20)
    async with running(tmp_path, channels=GREEN, apps={"api.green-api.test": green.app}) as s:
        await s.install()
        page = await s.settings_page()
        # Waiting for a scan: the provider and the gateway's name, what to do, the QR code.
        assert '>wa_green</b><br><span class="muted">GREEN-API</span>' in page
        assert "Linked devices" in page
        assert 'data-poll="1"' in page and "settings.js" not in page  # inlined, no URL
        first_qr = qr_of(page)
        linked = await s.press(page, "link", "wa_green")
        assert "Linked wa_green" in linked.text

        poll = form(linked.text, "state")
        answer = await s.h.client.post("/webhooks/b24/placement", data=poll)
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
        assert answer.json()["poll"] is True
        assert qr_of(answer.json()["html"]) == first_qr

        clock.advance(21)  # GREEN-API renews its QR code every 20 s
        answer = await s.h.client.post("/webhooks/b24/placement", data=poll)
        assert qr_of(answer.json()["html"]) != first_qr

        green.scan_qr()
        answer = await s.h.client.post("/webhooks/b24/placement", data=poll)
        data: dict[str, Any] = answer.json()
        assert data["poll"] is False  # connected: the page stops asking
        shown = html.unescape(data["html"])
        assert "+7 987 654-32-10" in shown and 'data-state="connected"' in shown
        assert "GREEN-API · wa_green" in shown
        assert "<img" not in shown


async def test_the_state_endpoint_is_guarded_like_the_buttons(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        poll = form(await s.settings_page(), "state")
        for fields in (
            {**poll, "form_token": poll["form_token"][:-2] + "00"},
            {**poll, "AUTH_ID": s.portal.issue_tokens().access_token},  # someone else's
            {k: v for k, v in poll.items() if k != "AUTH_ID"},
        ):
            answer = await s.h.client.post("/webhooks/b24/placement", data=fields)
            assert answer.status_code == 403
            assert "error" in answer.json() and "html" not in answer.json()


async def test_provider_text_on_the_page_is_escaped(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        hostile = AccountState(
            AccountStatus.CONNECTED, detail="<img src=x onerror=alert(1)>", name="<b>Shop</b>"
        )

        async def state(instance: str) -> AccountState:
            return hostile

        s.h.gateway.hub.account_state = state  # type: ignore[method-assign]
        page = await s.settings_page()
        assert "&lt;b&gt;Shop&lt;/b&gt;" in page and "<b>Shop</b>" not in page
        assert "onerror=alert(1)>" not in page
        poll = form(page, "state")
        answer = (await s.h.client.post("/webhooks/b24/placement", data=poll)).json()
        assert "<b>Shop</b>" not in answer["html"] and "&lt;b&gt;Shop" in answer["html"]
