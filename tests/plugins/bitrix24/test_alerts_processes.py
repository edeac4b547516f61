"""Once per change across processes: two gateways on one PostgreSQL database (as a scaled-out
deployment) both learn that a linked number needs its QR code, and that it is back; the
portal's people are told each change once, whichever process tells them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_fakes.bitrix24 import FakePortal

from gateway import AccountState, AccountStatus, InboundEvent
from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.postgres import postgres_schema

from .support import PUBLIC, form

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def settings(tmp_path: Path, pg_url: str, portal: FakePortal, name: str) -> dict[str, Any]:
    return {
        "public_url": PUBLIC,
        "store": {"url": pg_url},
        "media": {"directory": str(tmp_path / f"media-{name}")},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
            }
        },
    }


async def tell(h: GatewayHarness, status: AccountStatus, key: str) -> None:
    await h.gateway.emit("wa", [InboundEvent(key, AccountState(status))])


async def test_each_change_is_told_once_by_two_processes(tmp_path: Path, pg_url: str) -> None:
    portal = FakePortal(installed=False)
    apps = {
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
        "channel.test": Recorder(name="wa").app,
    }
    first = settings(tmp_path, pg_url, portal, "a")
    second = settings(tmp_path, pg_url, portal, "b")
    async with (
        running_gateway(first, apps=apps) as a,
        running_gateway(second, apps=apps) as b,
    ):
        portal.http = a.client
        await portal.install(f"{PUBLIC}/webhooks/b24/install")
        portal.finish_install()
        page = await portal.open_connector_settings(line=1)
        linked = await a.client.post("/webhooks/b24/placement", data=form(page.text, "link", "wa"))
        assert "Linked wa" in linked.text
        notes = portal.crm.notifications

        # Both processes poll the number and see it need its QR code, at the same moment.
        await asyncio.gather(
            tell(a, AccountStatus.NEEDS_QR, "a1"), tell(b, AccountStatus.NEEDS_QR, "b1")
        )
        assert [n["TAG"] for n in notes] == ["whatschat|wa"]
        await tell(b, AccountStatus.NEEDS_QR, "b2")  # a later poll, the same state
        assert len(notes) == 1

        await asyncio.gather(
            tell(a, AccountStatus.CONNECTED, "a3"), tell(b, AccountStatus.CONNECTED, "b3")
        )
        assert len(notes) == 2 and notes[-1]["MESSAGE"].startswith("✅")
