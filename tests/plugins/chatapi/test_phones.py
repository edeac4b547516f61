"""Chat ids and phone numbers as a CRM may write them."""

from __future__ import annotations

import pytest
from gateway_chatapi.phones import destination, normalize_phone, phone_of


@pytest.mark.parametrize(
    ("written", "digits"),
    [
        ("79001234567", "79001234567"),
        ("+7 (900) 123-45-67", "79001234567"),
        ("89001234567", "79001234567"),  # Russian trunk prefix: never delivered as 8...
        ("8 (701) 123 45 67", "77011234567"),  # Kazakh mobile
        ("84951234567", "84951234567"),  # as likely Vietnamese +84: left alone
        ("+89001234567", "89001234567"),  # written as international: taken as such
        ("4915112345678", "4915112345678"),
        ("1.650.555.1234", "16505551234"),
    ],
)
def test_normalize_phone(written: str, digits: str) -> None:
    assert normalize_phone(written) == digits


@pytest.mark.parametrize("bad", ["", "hello", "12345", "+7 900 abc", "1234567890123456"])
def test_not_phones(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_phone(bad)


@pytest.mark.parametrize(
    ("conversation", "params"),
    [
        ("79001234567@c.us", {"chatId": "79001234567@c.us"}),
        ("89001234567@c.us", {"chatId": "79001234567@c.us"}),
        ("79001234567@s.whatsapp.net", {"chatId": "79001234567@c.us"}),
        ("79001234567-1479621234@g.us", {"chatId": "79001234567-1479621234@g.us"}),
        ("120363041234567890@g.us", {"chatId": "120363041234567890@g.us"}),
        # A privacy id is not a phone number: passed through, not stripped to digits.
        ("123456789012345@lid", {"chatId": "123456789012345@lid"}),
        ("+7 900 123-45-67", {"phone": "79001234567"}),
        ("89001234567", {"phone": "79001234567"}),
    ],
)
def test_destination(conversation: str, params: dict[str, str]) -> None:
    assert destination(conversation) == params


@pytest.mark.parametrize("bad", ["someone", "a b@c.us", "abc@g.us", "@c.us", "x@"])
def test_bad_destinations(bad: str) -> None:
    with pytest.raises(ValueError):
        destination(bad)


def test_phone_of() -> None:
    assert phone_of("79001234567@c.us") == "79001234567"
    assert phone_of("79001234567-1479621234@g.us") is None
    assert phone_of("123@lid") is None
    assert phone_of(None) is None
