"""Issue 12, high: an install re-post must not replace a portal's application token.

Any employee who opens an app page holds a valid REFRESH_ID; only an administrator,
confirmed by the portal itself (`user.admin`), may (re)install and so change the token.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from gateway_fakes.bitrix24.events import event_form

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py: an async context manager of a `B24`
PUBLIC = "https://gw.example.com"
WA_AUTH = {"Authorization": "Bearer wa-token"}
OPERATOR = 27  # an employee, not an administrator
ATTACKER_TOKEN = "attacker-chosen-token"


def install_form(b24_portal: object, access: str, refresh: str, token: str) -> dict[str, str]:
    return {
        "AUTH_ID": access,
        "REFRESH_ID": refresh,
        "SERVER_ENDPOINT": "https://oauth.bitrix.info/rest/",
        "APPLICATION_TOKEN": token,
        "member_id": b24_portal.member_id,  # type: ignore[attr-defined]
        "PLACEMENT": "DEFAULT",
    }


async def converse(s: object, text: str) -> None:
    """A customer writes, so the chat exists for operator replies."""
    h = s.h  # type: ignore[attr-defined]
    body = {"messages": [{"id": text, "chat": "7999", "from": "7999", "text": text}]}
    assert (await h.client.post("/webhooks/wa", json=body, headers=WA_AUTH)).status_code == 200
    await h.observer.wait_for("delivered", 1)


async def forged_reply(s: object, token: str, text: str) -> int:
    """An operator reply as an attacker would sign it with `token`."""
    portal = s.portal  # type: ignore[attr-defined]
    auth = {**portal.event_auth(OPERATOR), "application_token": token}
    data = {
        "CONNECTOR": "whatschat",
        "LINE": "1",
        "MESSAGES": [
            {
                "im": {"chat_id": "1807", "message_id": "99999"},
                "message": {"user_id": str(OPERATOR), "text": text},
                "chat": {"id": "7999"},
            }
        ],
    }
    fields = event_form("ONIMCONNECTORMESSAGEADD", 555, data, int(portal.now()), auth)
    response = await s.h.client.post(  # type: ignore[attr-defined]
        "/webhooks/b24/events",
        content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return response.status_code


async def test_install_repost_by_an_employee_keeps_the_token(
    b24: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        genuine = await s.stored_token()
        await converse(s, "hello")
        pair = s.portal.issue_tokens(OPERATOR)  # what opening any app page hands out
        with caplog.at_level(logging.WARNING, "gateway.bitrix24"):
            response = await s.h.client.post(
                "/webhooks/b24/install",
                data=install_form(s.portal, pair.access_token, pair.refresh_token, ATTACKER_TOKEN),
            )
        assert response.status_code == 403
        assert await s.stored_token() == genuine
        assert "did not confirm an administrator" in caplog.text
        assert await forged_reply(s, ATTACKER_TOKEN, "FORGED: pay here") == 401
        # the portal's own events still work
        emission = await s.portal.operator_writes(1, "7999", "a genuine reply")
        assert [r.status_code for r in emission.responses] == [200]
        await s.recorder.wait_for(lambda r: any("genuine" in t for t in r.texts()))
        assert not any("FORGED" in t for t in s.recorder.texts())


async def test_onappinstall_repost_by_an_employee_keeps_the_token(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        genuine = await s.stored_token()
        pair = s.portal.issue_tokens(OPERATOR)
        auth = {
            **s.portal.event_auth(OPERATOR, pair=pair, with_refresh=True),
            "application_token": ATTACKER_TOKEN,
        }
        fields = event_form("ONAPPINSTALL", None, {"VERSION": "1"}, int(s.portal.now()), auth)
        for path in ("install", "events"):
            response = await s.h.client.post(
                f"/webhooks/b24/{path}",
                content=urlencode(fields),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 403
        assert await s.stored_token() == genuine


async def test_onappinstall_without_tokens_changes_nothing(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        genuine = await s.stored_token()
        auth = {**s.portal.event_auth(tokens=False), "application_token": ATTACKER_TOKEN}
        fields = event_form("ONAPPINSTALL", None, {"VERSION": "1"}, int(s.portal.now()), auth)
        response = await s.h.client.post(
            "/webhooks/b24/events",
            content=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 401
        assert await s.stored_token() == genuine


async def test_a_first_install_by_an_employee_is_refused(b24: Runner) -> None:
    async with b24() as s:
        s.portal.installed = True
        pair = s.portal.issue_tokens(OPERATOR)
        response = await s.h.client.post(
            "/webhooks/b24/install",
            data=install_form(s.portal, pair.access_token, pair.refresh_token, ATTACKER_TOKEN),
        )
        assert response.status_code == 403
        assert await s.stored_token() is None


async def test_a_genuine_reinstall_by_an_admin_replaces_the_token(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        await s.portal.uninstall()
        s.portal.application_token = "new-install-token-after-reinstall"
        await s.install()
        assert await s.stored_token() == "new-install-token-after-reinstall"
        assert await forged_reply(s, "ec1b2074a9d3f5c81b6e40d27a95cf38", "old token") == 401
        # the uninstall event was lost (Bitrix24 never resends): the admin's install still wins
        s.portal.application_token = "third-token"
        await s.install()
        assert await s.stored_token() == "third-token"


async def test_a_new_app_version_brings_its_token_in_onappupdate(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        delivery = await s.portal.update_app("token-of-version-2")
        assert delivery.status == 200
        assert await s.stored_token() == "token-of-version-2"
        # ...but an ONAPPUPDATE from an employee's tokens is refused like an install
        s.portal.application_token = ATTACKER_TOKEN
        delivery = await s.portal.update_app(ATTACKER_TOKEN, user_id=OPERATOR)
        assert delivery.status == 403
        assert await s.stored_token() == "token-of-version-2"


async def test_install_page_is_answered_for_the_real_flow(b24: Runner) -> None:
    async with b24() as s:
        response = await s.portal.install(f"{PUBLIC}/webhooks/b24/install")
        assert response.status_code == 200 and "BX24.installFinish()" in response.text
        response = await s.portal.install(f"{PUBLIC}/webhooks/b24/install", ui=False)
        assert response.status_code == 200
