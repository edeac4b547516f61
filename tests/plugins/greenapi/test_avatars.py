"""Customers' profile photos: asked once a day per chat, never holding a message up."""

from __future__ import annotations

from typing import Any

import pytest
from gateway_greenapi.avatars import RETRY_SECONDS, TTL_SECONDS, Avatars

from gateway.errors import TemporaryError
from gateway.models import InboundEvent, Message, Sender

pytestmark = pytest.mark.anyio

CHAT = "79001234567@c.us"


class Client:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def avatar(self, chat_id: str, seconds: float) -> str | None:
        self.asked.append(chat_id)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


def inbound(chat: str = CHAT, **fields: Any) -> InboundEvent:
    message = Message(chat, "m1", Sender(id=chat, name="Ivan"), text="hi", **fields)
    return InboundEvent(f"k:{chat}", message)


def photo(event: InboundEvent) -> str | None:
    assert isinstance(event.event, Message)
    return event.event.sender.avatar_url


async def test_a_photo_is_asked_once_a_day_and_a_failure_costs_nothing() -> None:
    now = [0.0]
    client = Client("https://pps.example/a.jpg", TemporaryError("timeout"), None)
    avatars = Avatars(client, clock=lambda: now[0])  # type: ignore[arg-type]
    [first] = await avatars.attach([inbound()])
    [again] = await avatars.attach([inbound()])
    assert photo(first) == photo(again) == "https://pps.example/a.jpg"
    assert client.asked == [CHAT]
    now[0] += TTL_SECONDS + 1
    [failed] = await avatars.attach([inbound()])  # the known photo is still used
    assert photo(failed) == "https://pps.example/a.jpg"
    now[0] += RETRY_SECONDS + 1
    [gone] = await avatars.attach([inbound()])  # the customer removed it
    assert photo(gone) is None and len(client.asked) == 3


async def test_groups_and_phone_typed_messages_get_no_photo() -> None:
    client = Client()
    avatars = Avatars(client)  # type: ignore[arg-type]
    group = inbound("79001234567-1581234048@g.us", is_group=True)
    mine = inbound(from_me=True, is_note=True)
    assert await avatars.attach([group, mine]) == [group, mine]
    assert client.asked == []
