"""Reading what Bitrix24 posts: PHP bracket-key forms (`data[MESSAGES][0][im][chat_id]=1`)
and JSON bodies, with hard limits so that a hostile body is refused (400), never a crash.

Bitrix24 encodes events like PHP's `http_build_query`: nested keys in brackets, every scalar
a string, empty arrays and nulls left out. The parser rebuilds the nesting the way PHP fills
`$_POST`: a later key wins over an earlier one, `a[]` appends, and a container whose keys are
exactly 0..n-1 becomes a list. It never allocates by index, so `a[999999]` costs one entry.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

MAX_FIELDS = 2000
MAX_DEPTH = 12
MAX_INDEX = 100_000
MAX_KEY_LENGTH = 512

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)\Z")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

# Bitrix24 sends the same few dozen keys in every event, and unescaping and splitting them
# was a third of reading one: both are remembered, for as many keys as `_KNOWN_KEYS` (a body
# of made-up keys fills the memory once; later keys are then read as before, not kept).
_KNOWN_KEYS = 2048
_NAMES: dict[str, str] = {}
# A key's path: its container segments, then its last one, each with its index (below).
_Path = tuple[tuple[tuple[str, int], ...], tuple[str, int]]
_SPLIT: dict[str, _Path | None] = {}
_NAME, _APPEND, _TOO_LARGE = -1, -2, sys.maxsize


class FormError(ValueError):
    """The body cannot be read safely; the text says why (no values are echoed)."""


def parse_body(body: bytes, content_type: str = "") -> dict[str, Any]:
    """A form or JSON body as nested data; JSON when declared or when it looks like it."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or (
        kind != "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{"
    ):
        return parse_json(body)
    return parse_form(body)


def parse_json(body: bytes, *, max_depth: int = MAX_DEPTH * 2) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FormError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise FormError("the JSON body must be an object")
    if _depth(data) > max_depth:
        raise FormError(f"the JSON body is nested deeper than {max_depth} levels")
    return data


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def parse_form(
    body: bytes | str,
    *,
    max_fields: int = MAX_FIELDS,
    max_depth: int = MAX_DEPTH,
    max_index: int = MAX_INDEX,
) -> dict[str, Any]:
    """Decode an `application/x-www-form-urlencoded` body into nested dicts and lists."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        pairs = _pairs(text, max_fields)
    except UnicodeDecodeError:
        raise FormError("the form is not valid UTF-8") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        segments = _segments(key, max_depth)
        if segments is None:
            continue
        node = root
        for segment, index in segments[0]:
            if index != _NAME:
                segment = _resolve(node, segment, index, max_index)
            child = node.get(segment)
            if child.__class__ is not dict:
                child = node[segment] = {}
            node = child
        segment, index = segments[1]
        if index != _NAME:
            segment = _resolve(node, segment, index, max_index)
        node[segment] = value
    return _listify(root)  # type: ignore[no-any-return]


def _pairs(text: str, max_fields: int) -> list[tuple[str, str]]:
    """`parse_qsl(text, keep_blank_values=True, errors="strict")`, faster on Bitrix24's
    bodies, whose every key is escaped (`data%5BMESSAGES%5D...`): urllib's general unquote
    was most of the cost of an event."""
    if text and 1 + text.count("&") > max_fields:
        raise FormError(f"the form has more than {max_fields} fields")
    pairs = []
    names = _NAMES
    for field in text.split("&"):
        if field:
            escaped, _, value = field.partition("=")
            name = names.get(escaped)
            if name is None:
                name = _unquote(escaped)
                if len(names) < _KNOWN_KEYS:
                    names[escaped] = name
            pairs.append((name, _unquote(value)))
    return pairs


def _unquote(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    brackets = text.replace("%5B", "[").replace("%5D", "]")
    if "%" not in brackets:
        return brackets
    return unquote(text, errors="strict")


def _segments(key: str, max_depth: int) -> _Path | None:
    try:
        path = _SPLIT[key]
    except KeyError:
        path = _split(key)
        if len(_SPLIT) < _KNOWN_KEYS:
            _SPLIT[key] = path
    if path is None:
        return None
    if len(path[0]) >= max_depth:
        raise FormError(f"a form key is nested deeper than {max_depth} levels")
    return path


def _split(key: str) -> _Path | None:
    """The key's segments as (segment, index) pairs, the containers apart from the last;
    the index is `_NAME`, `_APPEND` (`a[]`), or the number an all-digit segment names."""
    if len(key) > MAX_KEY_LENGTH:
        raise FormError(f"a form key is longer than {MAX_KEY_LENGTH} characters")
    match = _KEY.match(key)
    if match is None:
        # PHP mangles or drops such keys; nothing Bitrix24 sends looks like this.
        return None if not key or key.startswith("[") else ((), (key, _index(key)))
    names = (match.group(1), *_SEGMENT.findall(match.group(2)))
    segments = tuple((name, _index(name)) for name in names)
    return segments[:-1], segments[-1]


def _index(segment: str) -> int:
    if not segment:
        return _APPEND
    if segment.isascii() and segment.isdigit():
        return int(segment) if len(segment) <= 9 else _TOO_LARGE
    return _NAME


def _resolve(node: dict[str, Any], segment: str, index: int, max_index: int) -> str:
    if index == _APPEND:
        numbers = [int(k) for k in node if k.isascii() and k.isdigit()]
        index = max(numbers) + 1 if numbers else 0
        if index > max_index:
            raise FormError(f"a form list is longer than {max_index} items")
        return str(index)
    if index > max_index:
        raise FormError(f"a form key has an index above {max_index}")
    return segment


def _listify(value: dict[str, Any]) -> Any:
    converted = {k: _listify(v) if v.__class__ is dict else v for k, v in value.items()}
    # The keys are distinct, so they are 0..n-1 exactly when each of those is one of them.
    if "0" in converted and all(str(i) in converted for i in range(1, len(converted))):
        return [converted[str(i)] for i in range(len(converted))]
    return converted


# typed accessors: every value of a PHP form is a string, JSON may carry numbers


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_items(value: Any) -> list[Any]:
    """A PHP array as a list: a list, or a dict's values in key order (numbers first)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        keys = sorted(
            value, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))
        )
        return [value[k] for k in keys]
    return []


def as_str(value: Any) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def as_int(value: Any) -> int | None:
    text = as_str(value)
    if text is None:
        return None
    text = text.strip()
    if text[:1] in "+-":
        sign, digits = text[:1], text[1:]
    else:
        sign, digits = "", text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    return int(sign + digits)


def lower_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()}


def php_form_encode(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested dicts/lists into `http_build_query` pairs.

    `{"data": {"MESSAGES": [{"im": {"chat_id": 1}}]}}` becomes
    `[("data[MESSAGES][0][im][chat_id]", "1")]`. As in PHP, `None` and empty
    containers vanish, `True`/`False` become `"1"`/`"0"`.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        _flatten(str(key), value, pairs)
    return pairs


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]", item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "1" if value else "0"))
    else:
        out.append((prefix, str(value)))
