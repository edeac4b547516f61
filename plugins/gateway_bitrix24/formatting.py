"""Text between WhatsApp and Bitrix24: formatting marks, the operator signature, names.

WhatsApp marks `*bold*`, `_italic_`, `~strike~`, ```` ```mono``` ```` and `> quote` lines;
Bitrix24 chats use BB-codes (`[b]`, `[i]`, `[s]`, `[code]`, `>>` quote lines, `[br]`,
`[url=...]`, mentions and commands, see the `imbot.v2` "Text Formatting" docs). Each way
converts what the other side can show and keeps the words of everything else.

Customer text is inert: before WhatsApp's marks are converted, every `[` the customer typed
is followed by a zero-width space (U+200B), and so is the first `>` of a line typed as `>>`.
Bitrix24's parsers (the portal's `CTextParser` and the chat's JavaScript one) match tags by
patterns that want the tag name right after the bracket (`[URL=`, `[SEND=`, `[USER=`...):
with the invisible space there nothing matches, so `[url=javascript:...]`, `[send]`/`[put]`
buttons, mentions and formatting show as the characters typed. HTML entities (`&#91;`)
are no escape there (the chat shows them literally) and a look-alike bracket would change
what the operator reads; the zero-width space changes nothing visible.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

NAME_LIMIT = 25
_URL = re.compile(r"https?://[^\s\[\]]+")
_FENCE = re.compile(r"```(.*?)```", re.S)


def _emphasis(mark: str) -> re.Pattern[str]:
    m = re.escape(mark)
    # WhatsApp only formats a mark that opens before a non-space and closes after one,
    # outside words: snake_case and 2*3*4 stay as typed.
    return re.compile(rf"(?<![\w{m}]){m}(?![\s{m}])([^\n]*?[^\s{m}]|[^\s{m}]){m}(?![\w{m}])")


_WA_MARKS = (("*", "b"), ("_", "i"), ("~", "s"))
_WA_PATTERNS = [(_emphasis(mark), tag) for mark, tag in _WA_MARKS]


ZERO_WIDTH_SPACE = "\u200b"
_QUOTE_TYPED = re.compile(r"^>>", re.M)


def inert(text: str) -> str:
    """`text` with every BB-code tag and quote mark it contains made literal."""
    text = text.replace("[", "[" + ZERO_WIDTH_SPACE)
    return _QUOTE_TYPED.sub(">" + ZERO_WIDTH_SPACE + ">", text)


def whatsapp_to_bbcode(text: str) -> str:
    """Customer text as Bitrix24 shows it: WhatsApp marks become BB-codes, and nothing
    the customer typed acts as markup (`inert`)."""
    text = inert(text)
    out: list[str] = []
    position = 0
    for fence in _FENCE.finditer(text):
        out.append(_wa_inline(text[position : fence.start()]))
        out.append(f"[code]{fence.group(1).strip(chr(10))}[/code]")
        position = fence.end()
    out.append(_wa_inline(text[position:]))
    return "".join(out)


def _wa_inline(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if line.startswith("> "):
            line = ">>" + line[2:]
        lines.append(_wa_marks(line))
    return "\n".join(lines)


def _wa_marks(line: str) -> str:
    # Links keep their underscores and tildes: only the text between them is converted.
    pieces = []
    position = 0
    for url in _URL.finditer(line):
        pieces.append(_wa_apply(line[position : url.start()]))
        pieces.append(url.group(0))
        position = url.end()
    pieces.append(_wa_apply(line[position:]))
    return "".join(pieces)


def _wa_apply(text: str) -> str:
    for pattern, tag in _WA_PATTERNS:
        text = pattern.sub(rf"[{tag}]\1[/{tag}]", text)
    return text


_CODE = re.compile(r"\[code\](.*?)\[/code\]", re.S | re.I)
_BR = re.compile(r"\[br\]", re.I)
_URL_TAG = re.compile(r"\[url=([^\]]+)\](.*?)\[/url\]", re.S | re.I)
_URL_BARE = re.compile(r"\[url\](.*?)\[/url\]", re.S | re.I)
_CALL_TAG = re.compile(r"\[call=([^\]]+)\](.*?)\[/call\]", re.S | re.I)
_IMG = re.compile(r"\[img(?:\s[^\]]*)?\](.*?)\[/img\]", re.S | re.I)
_QUOTE = re.compile(r"\[quote(?:=[^\]]*)?\](.*?)\[/quote\]", re.S | re.I)
_VOID = re.compile(r"\[(?:icon|timestamp|disk|attach)(?:[= ][^\]]*)?\]", re.I)
# Tags whose text is kept and whose markup WhatsApp cannot show.
_PLAIN = re.compile(
    r"\[(user|chat|color|size|send|put|context|call|u|font|left|right|center|justify)"
    r"(?:=[^\]]*)?\](.*?)\[/\1\]",
    re.S | re.I,
)
_BB_MARKS = (("b", "*"), ("i", "_"), ("s", "~"), ("del", "~"))


def bbcode_to_whatsapp(text: str) -> str:
    """Operator text as WhatsApp shows it: BB-codes become WhatsApp marks or plain text."""
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(match.group(1))
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep_code, text)
    text = _BR.sub("\n", text)
    text = _URL_TAG.sub(_link, text)
    text = _URL_BARE.sub(lambda m: m.group(1).strip(), text)
    text = _CALL_TAG.sub(lambda m: f"{m.group(2)} ({m.group(1)})", text)
    text = _IMG.sub(lambda m: m.group(1).strip(), text)
    text = _VOID.sub("", text)
    for _ in range(3):  # nested plain tags, e.g. [color] inside [size]
        text = _PLAIN.sub(lambda m: m.group(2), text)
    for tag, mark in _BB_MARKS:
        pattern = re.compile(rf"\[{tag}\](\s*)(.*?)(\s*)\[/{tag}\]", re.S | re.I)
        text = pattern.sub(_marker(mark), text)
    text = _QUOTE.sub(_quote_block, text)
    text = "\n".join(
        "> " + line[2:] if line.startswith(">>") else line for line in text.split("\n")
    )
    return re.sub(r"\x00(\d+)\x00", lambda m: f"```{codes[int(m.group(1))]}```", text)


def _marker(mark: str) -> Callable[[re.Match[str]], str]:
    # "[b] hi [/b]" must become " *hi* ": WhatsApp ignores marks next to spaces.
    def replace(match: re.Match[str]) -> str:
        if not match.group(2):
            return match.group(1) + match.group(3)
        return f"{match.group(1)}{mark}{match.group(2)}{mark}{match.group(3)}"

    return replace


def _link(match: re.Match[str]) -> str:
    url, label = match.group(1).strip().strip("\"'"), match.group(2).strip()
    if not label or label == url:
        return url
    return f"{label} ({url})"


def _quote_block(match: re.Match[str]) -> str:
    lines = "\n".join(f"> {line}" for line in match.group(1).strip("\n").split("\n"))
    after = match.string[match.end() : match.end() + 1]
    return lines + ("\n" if after not in ("", "\n") else "")


def quote_bbcode(text: str, limit: int = 300) -> str:
    """A quoted message for Bitrix24: `>>` lines (its chat shows them as a quote)."""
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return "\n".join(f">>{line}" for line in text.split("\n"))


_SIGNATURE = re.compile(r"\A\[b\]([^\[\]\n]{1,128}?):\[/b\](?:\[br\]|\n)? ?", re.I)


def split_signature(text: str) -> tuple[str | None, str]:
    """(operator name, rest) of a text Bitrix24 prefixed with `[b]Name:[/b][br] `."""
    match = _SIGNATURE.match(text)
    if match is None:
        return None, text
    return match.group(1).strip(), text[match.end() :]


_APOSTROPHES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2010": "-", "\u2011": "-", "\u2013": "-"}
)


def sanitize_name(raw: str | None) -> tuple[str | None, str | None]:
    """(name, last_name) as Bitrix24 accepts them: letters, spaces, `-` and `'`, ≤ 25 each.

    Anything else (digits, emoji, punctuation) becomes a space; the first word is the
    name, the rest the last name. None when nothing usable is left.
    """
    if not raw:
        return None, None
    text = unicodedata.normalize("NFC", raw).translate(_APOSTROPHES)
    kept = "".join(_name_char(ch) for ch in text)
    words = [w.strip("-'") for w in kept.split()]
    words = [w for w in words if w]
    if not words:
        return None, None
    first = _clip(words[0])
    rest = _clip(" ".join(words[1:])) if len(words) > 1 else None
    return first, rest or None


def _name_char(ch: str) -> str:
    if ch in " -'" or unicodedata.category(ch)[0] in "LM":
        return ch
    # Digits glued to a name ("Anna2") are dropped; symbols and emoji separate words.
    return "" if ch.isdigit() else " "


def _clip(text: str) -> str:
    if len(text) <= NAME_LIMIT:
        return text
    cut = text[:NAME_LIMIT]
    if " " in cut and text[NAME_LIMIT] != " ":
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" -'")


def normalize_phone(value: str | None) -> str | None:
    """`+digits` for a phone number or a 1:1 WhatsApp id (`7999…@c.us`); None otherwise."""
    if not value:
        return None
    local, _, domain = value.partition("@")
    if domain and domain not in ("c.us", "s.whatsapp.net"):
        return None  # groups (@g.us), broadcast lists, newsletters
    digits = re.sub(r"[\s().\-]", "", local)
    digits = digits.removeprefix("+")
    if not digits.isascii() or not digits.isdigit() or not 7 <= len(digits) <= 15:
        return None
    return "+" + digits
