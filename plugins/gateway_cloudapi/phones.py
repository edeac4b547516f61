"""Turning a conversation id into the `to` of a Cloud API send.

Conversation ids of chats that started on WhatsApp are the customer's `wa_id` (bare E.164
digits) and are sent back unchanged. Ids typed by an operator or carried over from another
provider may be `+7 (900) 123-45-67`, `79001234567@c.us` or a Russian/Kazakh national
`89001234567`, which WhatsApp does not deliver; those are normalized. Ids that are not phone
numbers at all (groups, `@lid` privacy ids) cannot be reached through the Cloud API.
"""

from __future__ import annotations

import re

from gateway import PermanentError, national_to_international

_FORMATTING = re.compile(r"[\s()\-.]")
_PERSON_SUFFIXES = ("@c.us", "@s.whatsapp.net")
_UNREACHABLE_SUFFIXES = ("@g.us", "@lid", "@broadcast", "@newsletter")


def recipient(conversation_id: str, *, known_wa_id: bool = False) -> str:
    """The `to` for `conversation_id`; `known_wa_id` when the customer wrote from exactly it.

    Raises `PermanentError` (code `invalid_recipient`) for ids no send can reach.
    """
    raw = conversation_id.strip()
    lowered = raw.lower()
    if lowered.endswith(_UNREACHABLE_SUFFIXES):
        raise PermanentError(
            f"{raw!r} is a group or a private WhatsApp id; the Cloud API only writes to "
            "phone numbers",
            code="invalid_recipient",
        )
    for suffix in _PERSON_SUFFIXES:
        if lowered.endswith(suffix):
            raw = raw[: -len(suffix)]
            break
    compact = _FORMATTING.sub("", raw)
    international = compact.startswith(("+", "00"))
    digits = compact.removeprefix("+")
    if digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit():
        # Not a phone number (a business-scoped user id, say): Meta decides whether it is valid.
        return raw
    if known_wa_id:
        return digits
    # Russia and Kazakhstan write the trunk prefix 8 in place of the country code 7.
    return digits if international else national_to_international(digits)
