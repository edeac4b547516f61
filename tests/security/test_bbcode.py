"""Issue 12, medium: customer text reached the operator chat as live BB-code, and a customer
could fake the gateway's own "Not delivered to WhatsApp" notice.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from gateway_bitrix24.formatting import whatsapp_to_bbcode

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
WA_AUTH = {"Authorization": "Bearer wa-token"}
#: A BB-code tag as Bitrix24's parsers see one: the bracket, then the tag name.
LIVE_TAG = re.compile(r"\[/?[A-Za-z*]")

ATTACKS = [
    "[url=javascript:alert(1)]x[/url]",
    "[URL=https://evil.example]your bank[/URL]",
    "[url]javascript:alert(1)[/url]",
    "[send=/pay 100]Pay now[/send]",
    "[put=/transfer]Click[/put]",
    "[b]bold[/b] [i]it[/i] [u]u[/u] [s]s[/s] [color=#f00]red[/color] [size=30]big[/size]",
    "[user=1]Admin[/user] [chat=12]chat[/chat] [call=+100]call[/call]",
    "[img]https://evil.example/x.png[/img] [icon=https://evil.example/i.png]",
    "[quote]fake quote[/quote]",
    "[code]x[/code]",
    "[ b ]spaced[/ b ] [B]upper[/B]",
    ">>a quote line typed as such",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_typed_bbcode_stays_text(attack: str) -> None:
    shown = whatsapp_to_bbcode(attack)
    assert not LIVE_TAG.search(shown), shown
    assert not re.search(r"(?m)^>>", shown)
    assert shown.replace("\u200b", "") == attack  # the words are kept as typed


def test_whatsapp_formatting_still_converts() -> None:
    assert whatsapp_to_bbcode("*hi* _there_ ~x~") == "[b]hi[/b] [i]there[/i] [s]x[/s]"
    assert whatsapp_to_bbcode("> quoted") == ">>quoted"
    assert whatsapp_to_bbcode("*[url=x]y[/url]*") == "[b][\u200burl=x]y[\u200b/url][/b]"


async def customer(s: Any, msg_id: str, text: str) -> str:
    body = {"messages": [{"id": msg_id, "chat": "7999", "from": "7999", "text": text}]}
    # Counted before the webhook: its message may reach the portal before the 2xx returns.
    before = len(s.portal.messages())
    response = await s.h.client.post("/webhooks/wa", json=body, headers=WA_AUTH)
    assert response.status_code == 200
    await s.h.observer.wait_for("delivered", before + 1)
    return str(s.portal.messages()[-1].text)


async def test_attacks_arrive_inert_in_the_operator_chat(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        for index, attack in enumerate(ATTACKS):
            shown = await customer(s, f"m{index}", attack)
            assert not LIVE_TAG.search(shown), shown


@pytest.mark.parametrize(
    "forgery",
    [
        "*⚠ Not delivered to WhatsApp*: pay here https://evil.example",
        "⚠ Not delivered to WhatsApp: pay here",
        "_*NOT DELIVERED TO WHATSAPP*_: pay here",
        "\u200b⚠\ufe0f anything",
        "⚠ Не доставлено в WhatsApp: оплатите здесь",
        "_WhatsChat Gateway:_ your order is cancelled",
    ],
)
async def test_a_customer_cannot_forge_a_gateway_notice(b24: Runner, forgery: str) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        shown = await customer(s, "forged", forgery)
        assert shown.startswith("[i]Customer's message:[/i]\n"), shown


async def test_ordinary_text_is_not_labelled(b24: Runner) -> None:
    async with b24() as s:
        await s.install()
        await s.link()
        shown = await customer(s, "plain", "Not delivered yet? My parcel ⚠ is late")
        assert shown == "Not delivered yet? My parcel ⚠ is late"
