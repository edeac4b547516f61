"""Issue 12, medium: one portal saw, and could scan, the QR codes of other lines' and other
portals' numbers. `[channels.NAME] portals` assigns a channel to portals; the settings page
lists only channels this portal may link, and shows state and QR codes only for those not
linked elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway import cli
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

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
QR = "data:image/png;base64,iVBORw0KGgo="
OTHER_MEMBER = "f" * 32


class QrChannel(ChannelProvider):
    """A number waiting for its QR code to be scanned."""

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


def link_form(page: str, channel: str) -> dict[str, str]:
    import html
    import re

    for block in re.findall(r"<form\b.*?</form>", page, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', block))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        if fields.get("action") == "link" and fields.get("channel") == channel:
            return fields
    raise AssertionError(f"no link form for {channel!r}")


async def test_a_number_linked_to_another_line_shows_no_qr(b24: Runner) -> None:
    channels = {"qr2": {"provider": "qr-channel"}}
    async with b24(channels=channels, plugins=(QrPlugin(),)) as s:
        await s.install()
        line2 = s.portal.add_line("Support")
        page = (await s.page(line2)).text
        assert QR in page  # unlinked and assignable: its QR is shown where it can be linked
        response = await s.post_page(link_form(page, "qr2"))
        assert "Linked qr2" in response.text and QR in response.text
        page = (await s.page(1)).text
        assert "qr2" in page and "linked to open line" in page
        assert QR not in page and "scan the code" not in page


async def test_a_number_assigned_to_another_portal_is_not_listed(b24: Runner) -> None:
    channels = {
        "theirs": {"provider": "qr-channel", "portals": ["other.bitrix24.com", OTHER_MEMBER]},
        "ours": {"provider": "qr-channel", "portals": ["acme.bitrix24.com"]},
    }
    async with b24(channels=channels, plugins=(QrPlugin(),)) as s:
        await s.install()
        page = (await s.page()).text
        assert "theirs" not in page and "ours" in page
        # nor can a crafted link reach it
        fields = {**link_form(page, "ours"), "channel": "theirs"}
        response = await s.post_page(fields)
        assert "There is no channel named" in response.text
        assert await s.b24_routes() == []


async def test_a_portal_assigned_by_member_id_sees_its_number(b24: Runner) -> None:
    async with b24(channels={}) as s:
        await s.install()
        s.h.gateway.settings.channels["wa"].options["portals"] = [s.portal.member_id]
        await s.link()


async def test_a_number_linked_on_another_portal_is_not_listed(b24: Runner) -> None:
    routes = {
        "theirs": {"channel": "qr2", "crm": "b24", "target": f"{OTHER_MEMBER}/4"},
    }
    channels = {"qr2": {"provider": "qr-channel"}}
    async with b24(channels=channels, plugins=(QrPlugin(),), extra={"routes": routes}) as s:
        await s.install()
        page = (await s.page()).text
        assert "qr2" not in page and QR not in page and "another Bitrix24 portal" not in page


SETTINGS = """
public_url = "https://gw.example.com"
[store]
url = "sqlite:///{db}"
[channels.wa1]
provider = "chatapi"
base_url = "https://api.chat-api.com/instance1"
token = "t-1"
webhook_secret = "0123456789abcdef0123"
{portals}
[crms.b24]
provider = "bitrix24"
client_id = "app.1"
client_secret = "s-1"
{allowed}
"""


@pytest.mark.parametrize(
    ("portals", "allowed", "warned"),
    [
        ("", "", True),  # a marketplace app left open: any portal may install
        ("", 'allowed_portals = ["a.bitrix24.com", "b.bitrix24.com"]', True),
        ("", 'allowed_portals = ["a.bitrix24.com"]', False),  # one portal: nothing to share
        ('portals = ["a.bitrix24.com"]', "", False),  # every channel assigned
    ],
)
def test_check_warns_of_unassigned_channels_several_portals_may_see(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], portals: str, allowed: str, warned: bool
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS.format(db=tmp_path / "gw.db", portals=portals, allowed=allowed))
    assert cli.main(["check", "--settings", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("warning: crms.b24:" in out and "wa1" in out) is warned, out
