"""`ChatApiChannel.find_sent`: sends whose answer was lost, looked for in the fake Chat API's
queue (`/showMessagesQueue`) and history (`/messages`, `fromMe`), as a crash leaves them."""

from __future__ import annotations

import dataclasses
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from gateway_fakes.chatapi import FakeChatApi, Magic, magic_phone

from gateway.errors import AmbiguousError, PermanentError
from gateway.models import Attachment
from gateway.providers import NotLanded, Outgoing, Sent
from gateway.testing import GatewayHarness, Recorder, running_gateway
from tests.plugins.chatapi.test_provider import channel_of, make_settings, outgoing

pytestmark = pytest.mark.anyio

LOST = magic_phone(Magic.TIMEOUT_AFTER_EFFECT) + "@c.us"  # sent, but the answer never comes
OTHER = "79001112233@c.us"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def since(item: Outgoing, began: float) -> Outgoing:
    """The item as the core asks about it: with the time its lost attempt began."""
    return dataclasses.replace(item, sending_since=began)


def running(tmp_path: Path, fake: FakeChatApi) -> AbstractAsyncContextManager[GatewayHarness]:
    apps = {"api.chat-api.test": fake.app, "crm.test": Recorder(name="crm").app}
    return running_gateway(make_settings(tmp_path, fake, refill_on_start=False), apps=apps)


async def test_a_lost_answer_is_found_in_the_history_and_a_lost_request_is_not(
    tmp_path: Path,
) -> None:
    fake = FakeChatApi()
    async with running(tmp_path, fake) as h:
        provider = channel_of(h)
        assert provider.capabilities.finds_sent and provider.capabilities.settle_seconds >= 30
        # The operator typed the same text on the phone before the attempt: not ours.
        fake.phone_writes(LOST, "see you at 5")
        fake.advance(100)
        began = fake.clock()
        landed = outgoing(1, conversation_id=LOST, text="see you at 5")
        (outcome,) = await provider.send([landed])
        assert isinstance(outcome, AmbiguousError)
        never = outgoing(2, conversation_id=OTHER, text="see you at 5")
        asked = [
            since(landed, began),
            since(never, began),
        ]
        answers = await provider.find_sent(asked)
    assert [type(a) for a in answers] == [Sent, NotLanded]
    assert isinstance(answers[0], Sent) and answers[0].native_id == fake.sent[-1].id


async def test_two_identical_texts_in_flight_are_told_apart_by_count(tmp_path: Path) -> None:
    fake = FakeChatApi()
    async with running(tmp_path, fake) as h:
        provider = channel_of(h)
        began = fake.clock()
        first = outgoing(1, conversation_id=LOST, text="ok")
        await provider.send([first])
        second = outgoing(2, conversation_id=LOST, text="ok")  # its request never left
        answers = await provider.find_sent([since(first, began), since(second, began)])
    assert [type(a) for a in answers] == [Sent, NotLanded]


async def test_a_send_waiting_in_the_queue_landed(tmp_path: Path) -> None:
    fake = FakeChatApi(state="got qr code")  # not authenticated: sends wait in the queue
    async with running(tmp_path, fake) as h:
        provider = channel_of(h)
        began = fake.clock()
        item = outgoing(1, conversation_id=LOST, text="queued")
        await provider.send([item])
        (answer,) = await provider.find_sent([since(item, began)])
    assert [s.status for s in fake.sent] == ["queued"]
    assert isinstance(answer, Sent) and answer.native_id == fake.sent[0].id


async def test_a_message_in_parts_is_found_part_by_part(tmp_path: Path) -> None:
    fake = FakeChatApi()
    files = (
        Attachment("document", "https://files.example/a.pdf", caption="invoice"),
        Attachment("document", "https://files.example/b.pdf", caption="receipt"),
    )
    async with running(tmp_path, fake) as h:
        provider = channel_of(h)
        began = fake.clock()
        item = since(outgoing(7, conversation_id=LOST, text="two files", attachments=files), began)
        answers = []
        for _ in range(3):
            # Each attempt sends one more part and loses its answer; asked, it is found.
            (outcome,) = await provider.send([item])
            assert isinstance(outcome, AmbiguousError)
            (answer,) = await provider.find_sent([item])
            answers.append(answer)
        leftover = await h.gateway.store.kv_items("instance:wa", "progress:")
    assert [(s.method, s.caption or s.body) for s in fake.sent] == [
        ("sendMessage", "two files"),
        ("sendFile", "invoice"),
        ("sendFile", "receipt"),
    ]
    assert [type(a) for a in answers] == [NotLanded, NotLanded, Sent]
    final = answers[-1]
    assert isinstance(final, Sent) and final.native_id == fake.sent[0].id
    assert final.extra == {"parts": [fake.sent[1].id, fake.sent[2].id]}
    assert leftover == []


async def test_what_cannot_be_recognised_is_left_to_a_person(tmp_path: Path) -> None:
    fake = FakeChatApi()
    async with running(tmp_path, fake) as h:
        provider = channel_of(h)
        bare = outgoing(1, attachments=(Attachment("document", "https://files.example/a.pdf"),))
        (answer,) = await provider.find_sent([bare])
    assert isinstance(answer, PermanentError) and answer.code == "NOT_RECOGNISABLE"
    assert not [c for c in fake.calls if c.method in ("messages", "showMessagesQueue")]
