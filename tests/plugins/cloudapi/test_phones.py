"""Recipient normalization: digits only, 8 -> 7 for Russian/Kazakh national numbers."""

from __future__ import annotations

import pytest
from gateway_cloudapi.phones import recipient

from gateway.errors import PermanentError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("16505551234", "16505551234"),
        ("+1 (650) 555-12-34", "16505551234"),
        ("+7 900 123-45-67", "79001234567"),
        ("0079001234567", "79001234567"),
        ("89001234567", "79001234567"),  # Russian mobile written nationally
        ("8 (701) 123 45 67", "77011234567"),  # Kazakh
        ("+84912345678", "84912345678"),  # an explicit + means it is already international
        ("79001234567@c.us", "79001234567"),  # an id carried over from Chat API / GREEN-API
        ("79001234567@s.whatsapp.net", "79001234567"),
        ("US.13491208655302741918", "US.13491208655302741918"),  # not a phone: passed through
    ],
)
def test_recipient(given: str, expected: str) -> None:
    assert recipient(given) == expected


def test_a_wa_id_the_customer_wrote_from_is_never_rewritten() -> None:
    # A Kazakh customer's wa_id would look like a national number if 8 led it.
    assert recipient("87011234567") == "77011234567"
    assert recipient("87011234567", known_wa_id=True) == "87011234567"
    # Only the Russian/Kazakh mobile prefixes are rewritten: 84... is Vietnam.
    assert recipient("84912345678") == "84912345678"


@pytest.mark.parametrize("given", ["120363041234567890@g.us", "1234567890@lid", "status@broadcast"])
def test_groups_and_private_ids_are_unreachable(given: str) -> None:
    with pytest.raises(PermanentError) as caught:
        recipient(given)
    assert caught.value.code == "invalid_recipient"
