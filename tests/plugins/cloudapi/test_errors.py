"""Graph errors -> temporary or permanent delivery errors, Meta's code and words kept."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_cloudapi.errors import WINDOW_TEXT, graph_error, scrub
from gateway_fakes.cloudapi import GraphError

from gateway.errors import PermanentError, TemporaryError


def meta(code: int, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The (status, body) the fake -- shaped after Meta's table -- answers for `code`."""
    error = GraphError(code, **kwargs)
    return error.http_status, error.envelope("trace")


@pytest.mark.parametrize(
    ("code", "retry_after"),
    [
        (130429, 1.0),
        (131056, 6.0),
        (131000, None),
        (2, None),
        (4, 60.0),
        (80007, 60.0),
        (131053, None),
    ],
)
def test_temporary_codes(code: int, retry_after: float | None) -> None:
    error = graph_error(*meta(code))
    assert isinstance(error, TemporaryError)
    assert error.code == str(code)
    assert error.retry_after == retry_after


@pytest.mark.parametrize(
    "code", [131047, 131026, 131048, 131049, 131051, 100, 190, 368, 132001, 133010]
)
def test_permanent_codes(code: int) -> None:
    error = graph_error(*meta(code))
    assert isinstance(error, PermanentError)
    assert error.code == str(code)


def test_window_error_explains_and_keeps_metas_words() -> None:
    error = graph_error(*meta(131047))
    assert error.text.startswith(WINDOW_TEXT)
    assert (
        "[WhatsApp: (#131047) Re-engagement message: Message failed to send because more"
        in error.text
    )


def test_the_code_decides_not_the_http_status() -> None:
    status, body = meta(131026, http_status=500)
    assert isinstance(graph_error(status, body), PermanentError)
    status, body = meta(130429, http_status=400)
    assert isinstance(graph_error(status, body), TemporaryError)


@pytest.mark.parametrize(
    ("status", "kind"), [(502, TemporaryError), (429, TemporaryError), (404, PermanentError)]
)
def test_answers_without_a_graph_body(status: int, kind: type[Exception]) -> None:
    error = graph_error(status, None, "7")
    assert isinstance(error, kind)
    assert error.code == str(status)
    if isinstance(error, TemporaryError):
        assert error.retry_after == 7.0


def test_secrets_are_scrubbed() -> None:
    status, body = meta(100, details="bad url https://x.test/a?token=abc&b=1 for EAAGsecret")
    error = graph_error(status, body, secrets=("EAAGsecret",))
    assert "abc" not in error.text and "EAAGsecret" not in error.text
    assert scrub("GET /x?access_token=zzz") == "GET /x?access_token=***"
