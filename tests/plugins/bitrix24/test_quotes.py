"""Quote blocks of operator texts, and finding the quoted message in a history answer."""

from __future__ import annotations

from gateway_bitrix24.quotes import comparable, find_quoted, split_quote

RULE = "-" * 54


def test_a_quote_block_is_taken_out_of_the_text() -> None:
    text = f"{RULE}\nIvan Petrov [08.04.2026 13:06:49]\nSize [b]42[/b]?\n{RULE}\nYes."
    quote, rest = split_quote(text)
    assert quote is not None
    assert (quote.author, quote.date, quote.text, rest) == (
        "Ivan Petrov",
        "08.04.2026 13:06:49",
        "Size [b]42[/b]?",
        "Yes.",
    )
    # [br] line breaks, as a text may carry them, are read the same way.
    quote, rest = split_quote(text.replace("\n", "[br]"))
    assert quote is not None and quote.text == "Size [b]42[/b]?" and rest == "Yes."


def test_text_without_a_whole_block_is_left_alone() -> None:
    for text in ("plain", f"{RULE}\nnot closed", f"{RULE}\n{RULE}\nempty", "--- short ---"):
        assert split_quote(text) == (None, text)


def test_comparable_ignores_marks_signatures_and_inner_quotes() -> None:
    own = f"[b]Anna:[/b][br] {RULE}\nIvan [1.1.2026 10:00:00]\nq\n{RULE}\nWe  [i]do[/i]\u200b."
    assert comparable(own) == "we do."


def history(*messages: tuple[int, int, str, list[str]]) -> dict[str, object]:
    return {
        "message": {
            str(n): {
                "id": str(n),
                "senderid": str(author),
                "text": text,
                "params": {"CONNECTOR_MID": mids} if mids else [],
            }
            for n, author, text, mids in messages
        },
        "users": {"5": {"id": "5", "connector": True}, "27": {"id": "27", "connector": False}},
    }


def test_the_newest_earlier_match_is_quoted_by_its_whatsapp_or_own_id() -> None:
    answer = history(
        (10, 5, "Size 42?", ["wamid.1"]),
        (11, 27, "Yes", ["wamid.2"]),
        (12, 5, "Size 42?", ["wamid.3"]),
        (14, 5, "Size 42?", ["wamid.4"]),
    )
    assert find_quoted(answer, "size 42?", before=13) == "wamid.3"
    # An operator's message is known to the gateway by its own id.
    assert find_quoted(answer, "Yes", before=13) == "11"
    assert find_quoted(answer, "never written", before=13) is None
    # A customer message without a WhatsApp id is nothing to quote.
    assert find_quoted(history((3, 5, "hi", [])), "hi", before=None) is None
