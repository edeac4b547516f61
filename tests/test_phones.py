"""Phone numbers as a CRM writes them, turned into each provider's WhatsApp id."""

from __future__ import annotations

import pytest

from gateway.phones import NotAPhoneNumber, phone_digits


@pytest.mark.parametrize(
    ("typed", "digits"),
    [
        ("8 (900) 123-45-67", "79001234567"),
        ("+7 900 123 45 67", "79001234567"),
        ("79001234567", "79001234567"),
        ("+7 (900) 123-45-67", "79001234567"),
        ("8-701-123-45-67", "77011234567"),  # Kazakh mobile, national
        ("0049 30 1234567", "49301234567"),
        ("+84 912 345 678", "84912345678"),
        ("84912345678", "84912345678"),  # Vietnam, not a Russian national number
        (" 1.650.555.1234 ", "16505551234"),
    ],
)
def test_crm_formats_become_international_digits(typed: str, digits: str) -> None:
    assert phone_digits(typed) == digits


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ask the manager", "not a phone number"),
        ("+7 900 ABC 45 67", "not a phone number"),
        ("123", "has 3 digits"),
        ("+1234567890123456", "has 16 digits"),
        ("7900123456\uff17", "not a phone number"),  # a full-width digit 7
        ("79001234567@c.us", "not a phone number"),
    ],
)
def test_what_cannot_be_a_number_is_refused_with_a_reason(typed: str, why: str) -> None:
    with pytest.raises(NotAPhoneNumber, match=why):
        phone_digits(typed)
