"""Helpers `gateway.providers` offers plugin authors."""

from __future__ import annotations

import pytest

from gateway.errors import PermanentError, TemporaryError
from gateway.models import Message, Sender
from gateway.providers import Outcome, Outgoing, Route, Sent, send_each

pytestmark = pytest.mark.anyio


def outgoing(n: int) -> Outgoing:
    message = Message("c1", f"m{n}", Sender("c1"), text=f"hello {n}")
    return Outgoing(n, Route("main", "wa", "crm"), "wa", message)


async def test_send_each_calls_in_order_and_turns_errors_into_outcomes() -> None:
    called: list[int] = []
    refused = PermanentError("no such chat", code="NO_CHAT")

    async def send_one(item: Outgoing) -> Outcome:
        called.append(item.job_id)
        if item.job_id == 2:
            raise refused
        if item.job_id == 3:
            return TemporaryError("busy")
        return Sent(f"native-{item.job_id}")

    outcomes = await send_each([outgoing(n) for n in (1, 2, 3, 4)], send_one)
    assert called == [1, 2, 3, 4]
    assert outcomes[0] == Sent("native-1") and outcomes[3] == Sent("native-4")
    assert outcomes[1] is refused
    assert isinstance(outcomes[2], TemporaryError)
