"""The PHP bracket-key form parser: Bitrix24's real payloads, and hostile ones."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
from gateway_bitrix24.forms import (
    FormError,
    as_int,
    as_items,
    as_str,
    parse_body,
    parse_form,
    parse_json,
)

# The body of spec section 8a, step 4, URL-encoded as Bitrix24 sends it.
TRANSCRIPT = urlencode(
    [
        ("event", "ONIMCONNECTORMESSAGEADD"),
        ("event_handler_id", "555"),
        ("data[CONNECTOR]", "acme_wa"),
        ("data[LINE]", "107"),
        ("data[MESSAGES][0][im][chat_id]", "1807"),
        ("data[MESSAGES][0][im][message_id]", "86497"),
        ("data[MESSAGES][0][message][user_id]", "27"),
        ("data[MESSAGES][0][message][text]", "[b]Klaus Weber:[/b][br] Hello! See attachment"),
        ("data[MESSAGES][0][message][files][0][name]", "price.pdf"),
        ("data[MESSAGES][0][message][files][0][type]", "file"),
        ("data[MESSAGES][0][message][files][0][link]", "https://acme.bitrix24.com/~Ab12C"),
        ("data[MESSAGES][0][message][files][0][size]", "48213"),
        ("data[MESSAGES][0][chat][id]", "15557654321"),
        ("ts", "1773759161"),
        ("auth[access_token]", "c978"),
        ("auth[domain]", "acme.bitrix24.com"),
        ("auth[member_id]", "a223c6b3"),
        ("auth[application_token]", "ec1b2074"),
    ]
)


def test_bitrix_event_body_is_rebuilt_with_lists_and_strings() -> None:
    form = parse_form(TRANSCRIPT.encode())
    assert form["event"] == "ONIMCONNECTORMESSAGEADD"
    [item] = form["data"]["MESSAGES"]
    assert item["im"] == {"chat_id": "1807", "message_id": "86497"}
    assert item["message"]["files"] == [
        {
            "name": "price.pdf",
            "type": "file",
            "link": "https://acme.bitrix24.com/~Ab12C",
            "size": "48213",
        }
    ]
    assert item["message"]["text"] == "[b]Klaus Weber:[/b][br] Hello! See attachment"
    assert form["auth"]["application_token"] == "ec1b2074"


def test_php_rules_append_later_wins_and_sparse_keys() -> None:
    form = parse_form(b"a[]=x&a[]=y&b=1&b[c]=2&d[c]=2&d=3&e[2]=z&e[0]=w&f=")
    assert form["a"] == ["x", "y"]
    assert form["b"] == {"c": "2"}  # a later array replaces an earlier scalar
    assert form["d"] == "3"  # and a later scalar replaces an array
    assert form["e"] == {"2": "z", "0": "w"}  # not 0..n-1: stays a mapping
    assert form["f"] == ""


def test_scalar_data_and_json_bodies() -> None:
    assert parse_form(b"event=ONIMCONNECTORLINEDELETE&data=107")["data"] == "107"
    body = b'{"event": "ONIMCONNECTORMESSAGEADD", "data": {"LINE": 1}}'
    assert parse_body(body, "application/json")["data"] == {"LINE": 1}
    assert parse_body(body)["event"] == "ONIMCONNECTORMESSAGEADD"  # sniffed
    assert parse_body(b"a=1", "application/x-www-form-urlencoded") == {"a": "1"}


@pytest.mark.parametrize(
    "body",
    [
        "a" + "[x]" * 50 + "=1",  # too deep
        "a[99999999999]=1",  # index far past the limit
        "a[1000001]=1",
        "&".join(f"k{i}=v" for i in range(3000)),  # too many fields
        "k" * 600 + "=1",  # key too long
        "a=%ff%fe",  # not UTF-8 once decoded
    ],
)
def test_hostile_forms_are_refused(body: str) -> None:
    with pytest.raises(FormError):
        parse_form(body.encode())


def test_appends_past_the_index_limit_are_refused() -> None:
    with pytest.raises(FormError):
        parse_form(b"&".join([b"a[]=1"] * 20), max_index=10)


def test_odd_keys_are_tolerated_not_fatal() -> None:
    form = parse_form(f"{quote('a[b')}=1&{quote('[x]')}=2&{quote('c]')}=3&ok=4".encode())
    assert form == {"a[b": "1", "c]": "3", "ok": "4"}


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b"{not json", b'{"a":' * 5000 + b"1" + b"}" * 5000, b"\xff"]
)
def test_bad_json_is_refused(body: bytes) -> None:
    with pytest.raises(FormError):
        parse_json(body)


def test_accessors() -> None:
    assert as_items({"1": "b", "0": "a"}) == ["a", "b"]
    assert as_items("x") == []
    assert as_str(7) == "7" and as_str(7.0) == "7" and as_str(None) is None
    assert as_int("107") == 107 and as_int(" 5") == 5 and as_int("-3") == -3
    assert as_int("1e9") is None and as_int("") is None and as_int("9" * 30) is None
