"""Phone numbers as people type them, turned into the digits WhatsApp addresses.

A CRM writes `8 (900) 123-45-67`, `+7 900 123 45 67` or `79001234567`; WhatsApp knows the
customer by the international number, digits only (`79001234567`). Each channel provider
then spells that number its own way (`79001234567@c.us` at Chat API and GREEN-API, bare
digits at the Cloud API: `ChannelProvider.conversation_for_phone`).
"""

from __future__ import annotations

import re

_FORMATTING = re.compile(r"[\s()\-./]")
_MIN_DIGITS = 7  # the shortest national numbers with a country code (Niue, Tokelau: 4+3)
_MAX_DIGITS = 15  # E.164


class NotAPhoneNumber(ValueError):
    """The text cannot be a WhatsApp number; `str()` says why, for the person who typed it."""


def national_to_international(digits: str) -> str:
    """`89XXXXXXXXX` / `87XXXXXXXXX` (Russia, Kazakhstan) -> `79...` / `77...`.

    WhatsApp never delivers to a number written with the national trunk prefix 8. Only
    mobile prefixes are rewritten: no country code starts with 87 or 89 at that length,
    while `84...` (Vietnam) or `81...` (Japan) are real international numbers.
    """
    if len(digits) == 11 and digits[0] == "8" and digits[1] in "79":
        return "7" + digits[1:]
    return digits


def phone_digits(text: str) -> str:
    """The international number in `text`, digits only; `NotAPhoneNumber` when it is none.

    Spaces, brackets, dashes, dots and slashes are formatting. A leading `+` or `00` marks
    the number as international, so the trunk-prefix rewrite is not applied to it.
    """
    raw = text.strip()
    if not raw:
        raise NotAPhoneNumber("the phone number is empty")
    compact = _FORMATTING.sub("", raw)
    international = compact.startswith(("+", "00"))
    digits = compact[1:] if compact.startswith("+") else compact
    if digits.startswith("00"):
        digits = digits[2:]
    if not digits.isascii() or not digits.isdigit():
        raise NotAPhoneNumber(f"{raw!r} is not a phone number: only digits, +, spaces, ( ) and -")
    if not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        raise NotAPhoneNumber(
            f"{raw!r} has {len(digits)} digits; a phone number with its country code has "
            f"{_MIN_DIGITS} to {_MAX_DIGITS}"
        )
    return digits if international else national_to_international(digits)
