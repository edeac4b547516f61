"""PLACEMENT_OPTIONS as portals send it: a JSON string, a form array, or junk."""

from __future__ import annotations

import pytest
from gateway_bitrix24.placement import _options


def test_options_from_a_json_string_or_a_form_array() -> None:
    assert _options('{"line": "3", "status": 1}') == {"LINE": "3", "STATUS": 1}
    assert _options({"line": "3"}) == {"LINE": "3"}


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "[" * 9_000, None, "x" * 20_000])
def test_unreadable_options_are_none(raw: object) -> None:
    # "[" * 9_000 nests past the JSON parser's recursion limit (found by the fuzz suite).
    assert _options(raw) == {}
