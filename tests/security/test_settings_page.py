"""Issue 12, medium: settings-page actions trusted the form token alone.

Every action re-verifies the posted AUTH_ID with the portal (`user.admin`) before it changes
or shows anything; the form token is bound to portal, line and that AUTH_ID.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
OPERATOR = 27
QR = "data:image/png;base64,iVBORw0KGgo="


def form_of(page: str, action: str, channel: str = "") -> dict[str, str]:
    import html
    import re

    for block in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', block))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        if fields.get("action") == action and fields.get("channel", "") == channel:
            return fields
    raise AssertionError(f"no {action} form for {channel!r}")


async def test_refresh_with_the_form_token_alone_shows_nothing(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        page = (await s.page()).text
        token = form_of(page, "refresh")["form_token"]
        response = await s.post_page({"form_token": token, "action": "refresh"})
        assert response.status_code == 403
        assert "form_token" not in response.text and "<img" not in response.text


async def test_a_leaked_form_token_cannot_be_kept_alive(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        fields = form_of((await s.page()).text, "refresh")
        s.portal.tokens.expire(fields["AUTH_ID"])  # the session that issued it ended
        response = await s.post_page(fields)
        assert response.status_code == 403 and "form_token" not in response.text


async def test_unlink_with_a_bogus_auth_id_keeps_the_route(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        fields = form_of((await s.page()).text, "unlink", "wa")
        response = await s.post_page({**fields, "AUTH_ID": "bogus"})
        assert response.status_code == 403
        assert len(await s.b24_routes()) == 1
        assert s.portal.state.statuses[("whatschat", 1)].active


async def test_setup_without_auth_id_runs_nothing(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        response = await s.portal.open_placement(
            "https://gw.example.com/webhooks/b24/placement", "DEFAULT"
        )
        fields = form_of(response.text, "setup")
        registers = len(s.portal.calls_to("imconnector.register"))
        response = await s.post_page({k: v for k, v in fields.items() if k != "AUTH_ID"})
        assert response.status_code == 403
        assert len(s.portal.calls_to("imconnector.register")) == registers


async def test_the_form_token_is_bound_to_the_user_who_opened_the_page(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        s.portal.admins.add(2)
        fields = form_of((await s.page()).text, "link", "wa")
        other_admin = s.portal.issue_tokens(2).access_token
        response = await s.post_page({**fields, "AUTH_ID": other_admin})
        assert response.status_code == 403
        assert await s.b24_routes() == []


async def test_the_form_token_is_bound_to_its_line(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        line2 = s.portal.add_line("Support")
        fields = form_of((await s.page(line2)).text, "link", "wa")
        await s.post_page(fields)
        [route] = [r for r in await s.h.gateway.routes() if r.crm == "b24"]
        assert route.target.endswith(f"/{line2}")  # line 1 was never touched


async def test_an_employee_who_is_not_an_admin_sees_no_settings(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        response = await s.page(user_id=OPERATOR)
        assert response.status_code == 403 and "form_token" not in response.text
        # nor may they act with an admin's form
        fields = form_of((await s.page()).text, "link", "wa")
        operator = s.portal.issue_tokens(OPERATOR).access_token
        response = await s.post_page({**fields, "AUTH_ID": operator})
        assert response.status_code == 403
        assert await s.b24_routes() == []


async def test_an_admin_still_links_and_unlinks(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        fields = form_of((await s.page()).text, "unlink", "wa")
        response = await s.post_page(fields)
        assert "Unlinked" in response.text
        assert await s.b24_routes() == []
