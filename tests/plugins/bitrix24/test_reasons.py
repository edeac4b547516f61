"""Reasons in "Not delivered" notes: known codes explained in the portal's language, the
provider's own words kept after them."""

from __future__ import annotations

from gateway_bitrix24.reasons import REASONS, explain
from gateway_bitrix24.texts import translator


def test_known_codes_are_explained_in_the_portals_language() -> None:
    ru, en = translator("ru"), translator("en")
    meta = "Message undeliverable"
    expected = f"у этого номера нет WhatsApp, или он не принимает сообщения от компаний ({meta})"
    assert explain(ru, "131026", meta) == expected
    assert explain(ru, "noActiveSession", None).startswith("клиент не писал больше 24 часов")
    assert explain(en, "unknown_message", None).startswith("the message this refers to never")


def test_unknown_codes_keep_the_providers_words_or_say_it_failed() -> None:
    ru = translator("ru")
    assert explain(ru, "rejected", "recipient refuses") == "recipient refuses"
    assert explain(ru, None, None) == ru.gettext("notice.whatsapp_reported_failure")


def test_every_reason_exists_in_both_languages() -> None:
    for key in set(REASONS.values()):
        assert translator("ru").gettext(key) != translator("en").gettext(key), key
