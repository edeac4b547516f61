from __future__ import annotations

import pytest
from gateway_bitrix24.crm_templates import BadTemplateChoice, from_robot, from_sms_text


def test_a_plain_text_names_no_template() -> None:
    assert from_sms_text("Your order is ready\n#template x") == (
        None,
        "Your order is ready\n#template x",
    )


@pytest.mark.parametrize(
    ("body", "name", "language", "params", "text"),
    [
        ("#template order_ready", "order_ready", "", (), ""),
        ("#Template order_ready:en_US|Anna|12", "order_ready", "en_US", ("Anna", "12"), ""),
        ("  #шаблон promo:ru | Анна |  | 5 %\nтекст", "promo", "ru", ("Анна", "5 %"), "текст"),
    ],
)
def test_the_first_line_names_the_template_and_its_parameters(
    body: str, name: str, language: str, params: tuple[str, ...], text: str
) -> None:
    choice, rest = from_sms_text(body)
    assert choice is not None
    assert (choice.name, choice.language, choice.params, rest) == (name, language, params, text)


@pytest.mark.parametrize("body", ["#template", "#template Order Ready", "#шаблон заказ"])
def test_an_unreadable_directive_is_refused_with_how_to_write_it(body: str) -> None:
    with pytest.raises(BadTemplateChoice):
        from_sms_text(body)


def test_the_robot_properties() -> None:
    assert from_robot("", ["x"]) is None
    choice = from_robot("order_ready:ru", ["Ivan", "", 7])
    assert choice is not None and choice.to_extra() == {
        "name": "order_ready",
        "language": "ru",
        "params": ["Ivan", "7"],
    }
    with pytest.raises(BadTemplateChoice):
        from_robot("Order Ready", [])
