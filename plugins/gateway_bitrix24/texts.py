"""The plugin's message catalogue (`locale/<language>/LC_MESSAGES/gateway_bitrix24.po`).

Pages choose their language from Bitrix24's `LANG` (the user's interface language), then
the portal's; texts the gateway posts on its own (operator notices, alerts) use the portal's
language (`PortalRecord.language`, from `app.info`/`ONAPPINSTALL`). Anything else: English.
"""

from __future__ import annotations

from gateway.i18n import N_, Catalogue, Translator

CATALOGUE = Catalogue.of_package("gateway_bitrix24")

__all__ = ["CATALOGUE", "N_", "Translator", "translator"]


def translator(*languages: str | None) -> Translator:
    """Texts in the first of `languages` the catalogue has (page LANG, portal language)."""
    return CATALOGUE.translator(*languages)
