"""Approved templates as the Graph API lists them, and the checks before a CRM send."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_cloudapi.templates import Template, parse_template


def _raw(**fields: Any) -> dict[str, Any]:
    return {"name": "order_ready", "language": "ru", "status": "APPROVED", **fields}


def test_positional_parameters_are_counted_in_header_and_body() -> None:
    template = parse_template(
        _raw(
            components=[
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                {"type": "BODY", "text": "Hi {{2}}, order {{1}} is ready; see {{3}} {{2}}"},
                {"type": "FOOTER", "text": "no {{9}} here"},
            ]
        )
    )
    assert template == Template("order_ready", "ru", ("1", "2", "3"), ("1",), named=False)
    assert template.parameter_count == 4
    assert template.components(["A-1", "Ivan", "the\\nsite", "x"]) == [
        {"type": "header", "parameters": [{"type": "text", "text": "A-1"}]},
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Ivan"},
                {"type": "text", "text": "the\\nsite"},
                {"type": "text", "text": "x"},
            ],
        },
    ]


def test_named_parameters_carry_their_names() -> None:
    template = parse_template(
        _raw(
            parameter_format="NAMED",
            components=[{"type": "BODY", "text": "Hi {{first_name}}, {{ order }}"}],
        )
    )
    assert template is not None and template.named
    assert template.components(["Ivan", "A  1\n2"]) == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Ivan", "parameter_name": "first_name"},
                {"type": "text", "text": "A 1 2", "parameter_name": "order"},
            ],
        }
    ]


@pytest.mark.parametrize("status", ["PENDING", "REJECTED", "PAUSED", "DISABLED", None])
def test_only_approved_templates_are_kept(status: str | None) -> None:
    assert parse_template(_raw(status=status, components=[])) is None


def test_a_media_header_takes_no_text_parameter() -> None:
    template = parse_template(
        _raw(components=[{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "{{1}}"}])
    )
    assert template is not None and template.parameter_count == 1
