"""Text conversion between WhatsApp and Bitrix24, operator signatures, names, phones."""

from __future__ import annotations

import pytest
from gateway_bitrix24.formatting import (
    bbcode_to_whatsapp,
    normalize_phone,
    quote_bbcode,
    sanitize_name,
    split_signature,
    whatsapp_to_bbcode,
)


@pytest.mark.parametrize(
    ("whatsapp", "bbcode"),
    [
        ("Hello *there*", "Hello [b]there[/b]"),
        ("_soon_ and ~never~", "[i]soon[/i] and [s]never[/s]"),
        ("*_both_*", "[b][i]both[/i][/b]"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("* spaced *", "* spaced *"),
        ("see https://x.com/a_b_c/ and _it_", "see https://x.com/a_b_c/ and [i]it[/i]"),
        ("```\nprint(*x*)\n```", "[code]print(*x*)[/code]"),
        ("> quoted\nanswer", ">>quoted\nanswer"),
        ("two\nlines", "two\nlines"),
        ("*bold\nbroken*", "*bold\nbroken*"),
    ],
)
def test_whatsapp_to_bbcode(whatsapp: str, bbcode: str) -> None:
    assert whatsapp_to_bbcode(whatsapp) == bbcode


@pytest.mark.parametrize(
    ("bbcode", "whatsapp"),
    [
        ("Hi [b]Ivan[/b][br]bye", "Hi *Ivan*\nbye"),
        ("[B]caps[/B] [i]it[/i] [s]gone[/s] [u]under[/u]", "*caps* _it_ ~gone~ under"),
        ("[b] padded [/b]", " *padded* "),
        ("[url=https://a.example]the site[/url]", "the site (https://a.example)"),
        ("[url]https://a.example[/url]", "https://a.example"),
        ("[user=12]Bob[/user], [color=#f00][size=20]red[/size][/color]", "Bob, red"),
        ("[code][b]raw[/b][/code]", "```[b]raw[/b]```"),
        (">>quoted\nanswer", "> quoted\nanswer"),
        ("[QUOTE]a\nb[/QUOTE]after", "> a\n> b\nafter"),
        ("x [icon=https://i.example/s.png size=20] [timestamp=1645844720 format=X]", "x  "),
        (
            "[send=/help]Help[/send] [call=+15551234567]call us[/call]",
            "Help call us (+15551234567)",
        ),
        ("[img size=medium]https://i.example/p.jpg [/img]", "https://i.example/p.jpg"),
        ("[b][/b]empty", "empty"),
    ],
)
def test_bbcode_to_whatsapp(bbcode: str, whatsapp: str) -> None:
    assert bbcode_to_whatsapp(bbcode) == whatsapp


def test_round_trip_keeps_the_marks() -> None:
    text = "*Total:* _12 EUR_ ~old~"
    assert bbcode_to_whatsapp(whatsapp_to_bbcode(text)) == text


def test_operator_signature() -> None:
    assert split_signature("[b]Klaus Weber:[/b][br] Hello!") == ("Klaus Weber", "Hello!")
    assert split_signature("[b]Anna:[/b]") == ("Anna", "")
    assert split_signature("[b]Note:[/b] not at the start? yes it is") == (
        "Note",
        "not at the start? yes it is",
    )
    assert split_signature("Hello [b]Anna:[/b]") == (None, "Hello [b]Anna:[/b]")


def test_quotes_for_bitrix() -> None:
    assert quote_bbcode("a\nb") == ">>a\n>>b"
    assert quote_bbcode("x" * 400, limit=10) == ">>" + "x" * 9 + "…"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ivan Petrov", ("Ivan", "Petrov")),
        ("  José   María  López ", ("José", "María López")),
        ("😀 Jo3hn O\u2019Neil!!", ("John", "O'Neil")),
        ("Anne-Marie", ("Anne-Marie", None)),
        ("राहुल कुमार", ("राहुल", "कुमार")),
        ("Wolfeschlegelsteinhausenbergerdorff Sr", ("Wolfeschlegelsteinhausenb", "Sr")),
        ("Ann Beatrice Catherine Dorothea Eleonora", ("Ann", "Beatrice Catherine")),
        ("12345", (None, None)),
        ("---", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_sanitize_name(raw: str | None, expected: tuple[str | None, str | None]) -> None:
    name, last = sanitize_name(raw)
    assert (name, last) == expected
    for part in (name, last):
        assert part is None or (len(part) <= 25 and part.strip() == part)


@pytest.mark.parametrize(
    ("value", "phone"),
    [
        ("79991234567", "+79991234567"),
        ("79991234567@c.us", "+79991234567"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("120363041234567890@g.us", None),
        ("status@broadcast", None),
        ("abc", None),
        ("123", None),
        (None, None),
    ],
)
def test_normalize_phone(value: str | None, phone: str | None) -> None:
    assert normalize_phone(value) == phone
