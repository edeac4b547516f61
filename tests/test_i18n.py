"""The message catalogues: every key the code uses exists in every language, with the same
placeholders and the language's plural forms; and the catalogue API itself."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from gateway.i18n import N_, Catalogue, normalize_language

ROOT = Path(__file__).resolve().parent.parent
# Packages with a catalogue of their own: the domain is the package name.
PACKAGES = {
    path.parent.name: path.parent
    for base in (ROOT, ROOT / "plugins", ROOT / "gateway")
    for path in base.glob("*/locale")
    if path.is_dir()
}
KEYWORDS = {"gettext": None, "ngettext": (1,), "N_": None}
REQUIRED = ("en", "ru")


def _used(package_dir: Path) -> dict[str, list[str]]:
    """Keys used in a package's code (Babel's extractor), with where."""
    used: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(package_dir), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        key = message[0] if isinstance(message, tuple) else message
        if key:
            used.setdefault(key, []).append(f"{filename}:{lineno}")
    return used


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_some_packages_have_catalogues() -> None:
    assert "gateway_bitrix24" in PACKAGES


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_key_used_in_code_is_in_every_language(package: str) -> None:
    catalogue = Catalogue(PACKAGES[package] / "locale", package)
    assert set(REQUIRED) <= catalogue.languages, f"{package}: needs {REQUIRED}"
    used = _used(PACKAGES[package])
    for language in catalogue.languages:
        known = catalogue.message_ids(language)
        missing = {key: where for key, where in used.items() if key not in known}
        assert not missing, f"{catalogue.path(language)} lacks {missing}"
        untranslated = [key for key, text in known.items() if not text or "" in tuple(text)]
        assert not untranslated, f"{catalogue.path(language)}: empty texts for {untranslated}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_languages_agree_on_keys_placeholders_and_plural_forms(package: str) -> None:
    catalogue = Catalogue(PACKAGES[package] / "locale", package)
    english = catalogue.message_ids("en")
    unused = set(english) - set(_used(PACKAGES[package]))
    assert not unused, f"{catalogue.path('en')}: keys no code uses: {sorted(unused)}"
    for language in catalogue.languages - {"en"}:
        other = catalogue.message_ids(language)
        assert set(other) == set(english), f"{language}: {set(other) ^ set(english)}"
        for key, text in english.items():
            forms_en = text if isinstance(text, tuple) else (text,)
            forms = other[key] if isinstance(other[key], tuple) else (other[key],)
            assert isinstance(forms, tuple)
            assert (len(forms_en) > 1) == (len(forms) > 1), f"{language}/{key}: plural or not"
            if len(forms) > 1:
                assert len(forms) == catalogue.plural_count(language), f"{language}/{key}"
            wanted = set().union(*(_fields(f) for f in forms_en))
            for form in forms:
                assert _fields(form) <= wanted, f"{language}/{key}: unknown placeholder"
            if len(forms) == 1:
                assert _fields(forms[0]) == wanted, f"{language}/{key}: placeholders differ"


RU_PLURALS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && "
    "(n%100<10 || n%100>=20) ? 1 : 2);"
)


def _write(directory: Path, language: str, plural_forms: str, body: str) -> None:
    path = directory / language / "LC_MESSAGES" / "demo.po"
    path.parent.mkdir(parents=True)
    path.write_text(
        'msgid ""\nmsgstr ""\n'
        f'"Language: {language}\\n"\n"Content-Type: text/plain; charset=UTF-8\\n"\n'
        f'"Plural-Forms: {plural_forms}\\n"\n\n' + body,
        encoding="utf-8",
    )


@pytest.fixture
def demo(tmp_path: Path) -> Catalogue:
    _write(
        tmp_path,
        "en",
        "nplurals=2; plural=(n != 1);",
        'msgid "hello"\nmsgstr "Hello, {name}"\n\n'
        'msgid "only.en"\nmsgstr "English only"\n\n'
        'msgid "days"\nmsgid_plural "days"\nmsgstr[0] "{n} day"\nmsgstr[1] "{n} days"\n',
    )
    _write(
        tmp_path,
        "ru",
        RU_PLURALS,
        'msgid "hello"\nmsgstr "Здравствуйте, {name}"\n\n'
        'msgid "days"\nmsgid_plural "days"\n'
        'msgstr[0] "{n} день"\nmsgstr[1] "{n} дня"\nmsgstr[2] "{n} дней"\n',
    )
    return Catalogue(tmp_path, "demo")


def test_russian_plural_forms(demo: Catalogue) -> None:
    t = demo.translator("ru")
    said = [t.ngettext("days", n, n=n) for n in (1, 2, 5, 11, 21, 22, 25, 111, 0)]
    assert said == [
        "1 день", "2 дня", "5 дней", "11 дней", "21 день", "22 дня", "25 дней", "111 дней",
        "0 дней",
    ]  # fmt: skip
    assert demo.translator("en").ngettext("days", 1, n=1) == "1 day"
    assert demo.plural_count("ru") == 3


def test_language_choice_and_fallbacks(demo: Catalogue) -> None:
    assert demo.languages == {"en", "ru"}
    assert demo.translator("ru").gettext("hello", name="Анна") == "Здравствуйте, Анна"
    assert demo.translator("ru_RU.UTF-8").language == "ru"
    assert demo.translator("de", "ru").language == "ru"  # page LANG unknown, portal's used
    assert demo.translator("ua").language == "en"  # no catalogue: English
    assert demo.translator(None, "").language == "en"
    # A key missing in Russian shows the English text, never the key.
    assert demo.translator("ru").gettext("only.en") == "English only"
    # A placeholder the caller forgot stays visible instead of raising.
    assert demo.translator("en").gettext("hello") == "Hello, {name}"


def test_normalize_language() -> None:
    assert normalize_language("RU") == "ru"
    assert normalize_language("en-US") == "en"
    assert normalize_language("<script>") is None
    assert normalize_language(None) is None
    assert N_("x.y") == "x.y"
