"""PHP-style parameter handling: bracket-key forms, PHP truthiness, key case rules.

Bitrix is PHP: form bodies and query strings are parsed like `$_REQUEST` (nested
`a[b][0]=x` keys, every scalar a string) and re-encoded like `http_build_query`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["php_form_decode", "php_form_encode"]

_SEGMENT = re.compile(r"\[([^\]]*)\]")


def php_form_encode(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested dicts/lists into `http_build_query` pairs, as PHP does.

    `{"data": {"MESSAGES": [{"im": {"chat_id": 1}}]}}` becomes
    `[("data[MESSAGES][0][im][chat_id]", "1")]`. `None` and empty containers vanish,
    `True`/`False` become `"1"`/`"0"`. (The fake keeps its own copy: it shares no code
    with the plugin it stands in front of.)
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


def php_form_decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested data from bracket-key pairs, as PHP fills `$_POST`.

    Containers whose keys are exactly 0..n-1 become lists (what PHP would
    `json_encode` as a list); values stay strings.
    """
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        head, _, rest = raw_key.partition("[")
        segments = [head, *_SEGMENT.findall("[" + rest)] if rest else [head]
        node = root
        for depth, segment in enumerate(segments):
            last = depth == len(segments) - 1
            key = str(_next_index(node)) if segment == "" else segment
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return _listify(root)  # type: ignore[no-any-return]


def parse_query(query: str) -> dict[str, Any]:
    """Decode a URL query string (or form body) into nested PHP-style params."""
    return php_form_decode(parse_qsl(query, keep_blank_values=True))


def _next_index(node: dict[str, Any]) -> int:
    numeric = [int(k) for k in node if k.isdigit()]
    return max(numeric) + 1 if numeric else 0


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted


def php_empty(value: Any) -> bool:
    """PHP `empty()`: `"0"`, `0`, `""`, `False`, `None` and empty containers."""
    return value in (None, "", "0", 0, False) or (isinstance(value, dict | list) and not value)


def php_int(value: Any) -> int:
    """PHP `(int)` cast: leading digits of a string, 0 when there are none."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = re.match(r"\s*([+-]?\d+)", str(value) if value is not None else "")
    return int(match.group(1)) if match else 0


def as_list(value: Any) -> list[Any] | None:
    """PHP arrays arrive as lists or as dicts with numeric keys; None if scalar."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return None


def upper_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    """`array_change_key_case($params, CASE_UPPER)`: top level only."""
    return {str(k).upper(): v for k, v in params.items()}


def lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in params.items()}


def deep_keys(value: Any, *, upper: bool) -> Any:
    """Bitrix `Converter(KEYS | RECURSIVE)`: change key case at every depth."""
    if isinstance(value, dict):
        return {
            (str(k).upper() if upper else str(k).lower()): deep_keys(v, upper=upper)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [deep_keys(v, upper=upper) for v in value]
    return value
