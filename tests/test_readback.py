"""`gateway.find_in_lists`: what every search of a provider's own lists shares."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway import (
    Claims,
    Landing,
    Match,
    Message,
    NotLanded,
    Outgoing,
    PermanentError,
    Planned,
    Route,
    Sender,
    Sent,
    find_in_lists,
)

pytestmark = pytest.mark.anyio

ROUTE = Route(name="r", channel="wa", crm="crm")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Hub:
    """Only what `Claims` asks: ids the gateway recorded for other sends."""

    def __init__(self, recorded: set[str]) -> None:
        self.recorded = recorded

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        return native_id in self.recorded


def item(job_id: int, text: str) -> Outgoing:
    message = Message(conversation_id="c", native_id=f"n{job_id}", sender=Sender("op"), text=text)
    return Outgoing(job_id=job_id, route=ROUTE, source="crm", event=message)


class Lists:
    """A provider with one list of sent texts, `(id, text)`, oldest first."""

    def __init__(self, listed: Sequence[tuple[str, str]], parts: dict[int, list[str]]) -> None:
        self.listed = listed
        self.parts = parts
        self.reads = 0

    async def plan(self, outgoing: Outgoing) -> Planned[str]:
        assert isinstance(outgoing.event, Message)
        if outgoing.event.text == "":
            raise PermanentError("nothing to recognise", code="NOT_RECOGNISABLE")
        done = self.parts.get(outgoing.job_id, [])
        if len(done) == 2:
            return Planned(2, None, done)
        return Planned(2 if done else 1, outgoing.event.text, done)

    async def look_up(self, sought: list[str]) -> Match[str]:
        self.reads += 1

        async def match(text: str, claims: Claims) -> str | None:
            for message_id, listed_text in self.listed:
                if listed_text == text and (found := await claims.take(message_id)):
                    return found
            return None

        return match

    async def answer(
        self, outgoing: Outgoing, parts: int, done: list[str], found: str | None
    ) -> Landing:
        if found is None:
            return NotLanded("not listed")
        return Sent(native_id=",".join([*done, found]))


async def test_each_listed_message_stands_for_one_item_and_never_for_a_recorded_send() -> None:
    lists = Lists([("old", "hi"), ("a", "hi"), ("b", "hi")], parts={})
    claims = Claims(Hub(recorded={"old"}), "wa")  # type: ignore[arg-type]
    batch = [item(1, "hi"), item(2, "hi"), item(3, "hi"), item(4, "")]
    answers = await find_in_lists(
        batch, claims, plan=lists.plan, look_up=lists.look_up, answer=lists.answer
    )
    assert answers[:3] == [Sent("a"), Sent("b"), NotLanded("not listed")]
    assert isinstance(answers[3], PermanentError)  # that item only
    assert lists.reads == 1  # the lists are read once for the batch


async def test_nothing_sought_reads_no_list_and_a_finished_parted_send_is_answered() -> None:
    lists = Lists([], parts={1: ["p1", "p2"]})
    claims = Claims(Hub(recorded=set()), "wa")  # type: ignore[arg-type]
    answers = await find_in_lists(
        [item(1, "two parts")], claims, plan=lists.plan, look_up=lists.look_up, answer=lists.answer
    )
    assert answers == [Sent("p1,p2")]
    assert lists.reads == 0
