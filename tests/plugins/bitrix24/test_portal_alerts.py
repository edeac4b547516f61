"""Alerts when Bitrix24 refuses the portal's tokens: nobody can be told through the portal
while it refuses, so its pages show a banner; once a reinstall makes it work again, the
people who get alerts are told what happened, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import PUBLIC, running
from .test_provider import wait_dead

pytestmark = pytest.mark.anyio


async def test_refused_tokens_show_a_banner_and_are_told_once_the_portal_works_again(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()  # by user 1, who gets the alerts by default
        record = await s.provider.store.get(s.portal.member_id)
        assert record is not None
        s.portal.tokens.use_refresh(record.refresh_token)  # the stored grant stops working
        s.portal.expire_tokens()
        s.portal.app_record.language_id = "ru"
        await s.customer("m1", "hello")
        await wait_dead(s, 1)
        notes = s.portal.crm.notifications
        assert notes == []  # a portal that refuses the gateway cannot be told through itself

        line = await s.settings_page()
        assert "⚠ Битрикс24 отказывает шлюзу в доступе к этому порталу" in line
        assert "Переустановите приложение" in line
        app = await s.portal.open_placement(f"{PUBLIC}/webhooks/b24/placement", "DEFAULT")
        assert "⚠ Битрикс24 отказывает шлюзу в доступе к этому порталу" in app.text

        await s.install()  # an administrator reinstalls: the portal works again
        [back] = notes
        assert back["USER_ID"] == 1 and back["TAG"] == "whatschat|portal"
        assert back["MESSAGE"].startswith("✅ WhatsChat Gateway снова работает с этим порталом.")
        assert "отложены в шлюзе" in back["MESSAGE"]
        assert "Битрикс24 отказывает" not in await s.settings_page()

        await s.install()  # again, with nothing refused in between: nothing to tell
        assert len(notes) == 1
