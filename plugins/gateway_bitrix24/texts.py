"""The plugin's message catalogue (`locale/<language>/LC_MESSAGES/gateway_bitrix24.po`).

Pages choose their language from Bitrix24's `LANG` (the user's interface language), then
the portal's; texts the gateway posts on its own (operator notices, alerts) use the portal's
language: `PortalRecord.language`, taken from `ONAPPINSTALL`'s `LANGUAGE_ID` or, for a
portal installed before that was kept, asked once with `app.info` (`LANGUAGE_ID`).
Anything the catalogue lacks: English.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from gateway import N_, Catalogue, DeliveryError, Translator, normalize_language

from .forms import as_dict, as_str
from .records import PortalRecord, PortalStore
from .rest import RestClient

log = logging.getLogger("gateway.bitrix24")

CATALOGUE = Catalogue.of_package("gateway_bitrix24")

__all__ = ["CATALOGUE", "N_", "LazyTranslator", "PortalLanguages", "Translator", "translator"]


def translator(*languages: str | None) -> Translator:
    """Texts in the first of `languages` the catalogue has (page LANG, portal language)."""
    return CATALOGUE.translator(*languages)


class PortalLanguages:
    """The language of each portal, for texts no page request comes with."""

    def __init__(self, rest: RestClient, store: PortalStore) -> None:
        self.rest = rest
        self.store = store
        self._asked: set[str] = set()

    async def of(self, member_id: str) -> str | None:
        record = await self.store.get(member_id)
        if record is None:
            return None
        if record.language:
            return record.language
        if member_id in self._asked:
            return None  # asked once in this process; English until the next install
        self._asked.add(member_id)
        try:
            reply = await self.rest.call(member_id, "app.info")
        except DeliveryError as exc:
            log.info("the language of %s is unknown (app.info: %s)", record.domain, exc)
            return None
        language = normalize_language(as_str(as_dict(reply.result).get("LANGUAGE_ID")))
        if language:
            await self.remember(member_id, language)
        return language

    async def remember(self, member_id: str, language: str | None) -> None:
        code = normalize_language(language)
        if not code:
            return

        def change(record: PortalRecord) -> None:
            record.language = code

        await self.store.update(member_id, change)

    async def translator(self, member_id: str) -> Translator:
        return translator(await self.of(member_id))

    def lazy(self, member_id: str) -> LazyTranslator:
        """A translator looked up at its first use (most messages need no text of ours)."""
        return LazyTranslator(self, member_id)


class LazyTranslator:
    def __init__(self, languages: PortalLanguages, member_id: str) -> None:
        self._languages = languages
        self._member_id = member_id
        self._translator: Translator | None = None

    async def get(self) -> Translator:
        if self._translator is None:
            self._translator = await self._languages.translator(self._member_id)
        return self._translator


#: Titles that start texts the gateway itself posts in an open-line chat.
_GATEWAY_KEYS = (
    N_("notice.not_delivered"),
    N_("chat.gateway_note"),
    N_("chat.from_business_phone"),
)
_NOT_SHOWN = re.compile(r"\[/?(?:b|i|s|u|code)\]|^>>|[*_~\s]", re.I | re.M)


def _visible(text: str) -> str:
    """What a chat shows first: no tags, marks, spaces or invisible characters, folded."""
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return _NOT_SHOWN.sub("", text).replace("\u26a0", "").casefold()


GATEWAY_TITLES = tuple(
    sorted(
        {
            _visible(CATALOGUE.translator(language).gettext(key))
            for language in CATALOGUE.languages
            for key in _GATEWAY_KEYS
        }
    )
)


def looks_like_gateway_text(text: str) -> bool:
    """Whether customer text would start like a notice of the gateway (a warning sign, or a
    notice title in any language, whatever the formatting): such text gets a label."""
    bare = "".join(c for c in text if unicodedata.category(c) != "Cf")
    bare = _NOT_SHOWN.sub("", bare)
    return bare.startswith("\u26a0") or _visible(text).startswith(GATEWAY_TITLES)
