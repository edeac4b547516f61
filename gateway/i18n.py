"""Texts people read inside the CRM, in their language, from gettext message catalogues.

Every text a Bitrix24 user sees (pages, operator notices, alerts, names of robots) comes
from a catalogue, never from a string in code. A catalogue is a set of ordinary gettext
`.po` files, one per language, in the standard layout::

    <package>/locale/<language>/LC_MESSAGES/<domain>.po

They are read with Babel when first used; nothing is compiled into `.mo` files, so no
binary can drift from its source. Message ids are symbolic keys (`settings.state.needs_qr`)
and every language, English included, has its own text; `tests/test_i18n.py` extracts
every key the code uses (with Babel's extractor) and checks that it exists in each
catalogue with the same placeholders.

Use from a plugin::

    from gateway import Catalogue, N_

    CATALOGUE = Catalogue.of_package("gateway_telegram")   # domain: the package name
    t = CATALOGUE.translator(lang_from_page, portal_language)  # first one it has, else English
    t.gettext("notice.not_delivered", reason=reason)        # "{reason}" in the .po text
    t.ngettext("history.imported", count, count=count)      # plural forms of the language
    STATES = {"connected": N_("state.connected")}          # marks a key for the extractor

Placeholders are `str.format` fields by name. A placeholder the caller did not pass is
left as written rather than raising: a text with a visible `{name}` is better than an
operator notice that is never sent (the catalogue test keeps that from happening).
"""

from __future__ import annotations

import gettext
import io
import re
import string
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DEFAULT_LANGUAGE = "en"
LOCALE_DIR = "locale"
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def N_(message_id: str) -> str:
    """Mark a key for the extractor where it is looked up later (tables of labels)."""
    return message_id


def normalize_language(value: str | None) -> str | None:
    """`ru`, `ru-RU`, `ru_RU.UTF-8` → `ru`; None for nothing usable.

    Bitrix24 passes its own two-letter codes (`LANG=ru`, `ua`, `kz`, `tc`...), which are
    used as they are: a code the catalogue lacks falls back to English.
    """
    if not value:
        return None
    code = re.split(r"[-_.@]", value.strip().lower(), maxsplit=1)[0]
    return code if _LANGUAGE.match(code) else None


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Translator:
    """The texts of one catalogue in one language (English behind it for missing keys)."""

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self._translations = translations

    def gettext(self, message_id: str, /, **params: Any) -> str:
        return _format(self._translations.gettext(message_id), params)

    def ngettext(self, message_id: str, count: int, /, **params: Any) -> str:
        """The plural form for `count` (Russian has three: 1 день, 2 дня, 5 дней)."""
        text = self._translations.ngettext(message_id, message_id, count)
        return _format(text, params)

    __call__ = gettext


def _format(text: str, params: Mapping[str, Any]) -> str:
    if not params and "{" not in text:
        return text
    return string.Formatter().vformat(text, (), _Defaults(params))


class Catalogue:
    """One domain's messages in every language found under its locale directory."""

    def __init__(
        self, directory: Path, domain: str, *, default_language: str = DEFAULT_LANGUAGE
    ) -> None:
        self.directory = Path(directory)
        self.domain = domain
        self.default_language = default_language
        self._cache: dict[str, gettext.NullTranslations] = {}

    @classmethod
    def of_package(cls, package: str, domain: str | None = None) -> Catalogue:
        """The catalogue in `<package>/locale/`; its domain is the package name by default."""
        root = resources.files(package).joinpath(LOCALE_DIR)
        return cls(Path(str(root)), domain or package)

    @cached_property
    def languages(self) -> frozenset[str]:
        """Languages that have a `.po` file for this domain."""
        if not self.directory.is_dir():
            return frozenset()
        return frozenset(
            child.name
            for child in self.directory.iterdir()
            if (child / "LC_MESSAGES" / f"{self.domain}.po").is_file()
        )

    def path(self, language: str) -> Path:
        return self.directory / language / "LC_MESSAGES" / f"{self.domain}.po"

    def choose(self, *preferences: str | None) -> str:
        """The first preferred language this catalogue has, else the default (English)."""
        for preference in preferences:
            language = normalize_language(preference)
            if language is not None and language in self.languages:
                return language
        return self.default_language

    def translator(self, *preferences: str | None) -> Translator:
        language = self.choose(*preferences)
        return Translator(language, self._translations(language))

    def message_ids(self, language: str) -> dict[str, str | tuple[str, ...]]:
        """Every key of one language with its text (a tuple of forms for plurals)."""
        catalog = self._read(language)
        out: dict[str, str | tuple[str, ...]] = {}
        for message in catalog:
            if not message.id:
                continue  # the header
            key = message.id[0] if isinstance(message.id, tuple | list) else message.id
            text = message.string
            out[str(key)] = tuple(text) if isinstance(text, tuple | list) else str(text)
        return out

    def plural_count(self, language: str) -> int:
        return int(self._read(language).num_plurals)

    def _read(self, language: str) -> Any:
        with self.path(language).open("rb") as handle:
            return read_po(handle, locale=language, domain=self.domain)

    def _translations(self, language: str) -> gettext.NullTranslations:
        cached = self._cache.get(language)
        if cached is not None:
            return cached
        translations = self._load(language)
        if language != self.default_language:
            translations.add_fallback(self._translations(self.default_language))
        self._cache[language] = translations
        return translations

    def _load(self, language: str) -> gettext.NullTranslations:
        if language not in self.languages:
            return gettext.NullTranslations()
        # Compiled in memory from the .po source at first use: the stdlib then applies the
        # catalogue's own Plural-Forms, as any gettext program would.
        buffer = io.BytesIO()
        write_mo(buffer, self._read(language))
        buffer.seek(0)
        return gettext.GNUTranslations(buffer)
