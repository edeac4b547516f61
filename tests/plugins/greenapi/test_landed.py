"""`GreenApiProvider.find_sent`: sends whose answer was lost, looked for in the fake
GREEN-API's send queue (`showMessagesQueue`) and outgoing journal (`lastOutgoingMessages`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_fakes.greenapi import ALL_NOTIFICATIONS_ON, FakeGreenApi, Magic, magic_phone
from gateway_greenapi.provider import GreenApiProvider

from gateway.errors import AmbiguousError, PermanentError
from gateway.models import Attachment, Location
from gateway.providers import NotLanded, Outgoing, Sent
from gateway.testing.standalone import RecordingHub
from tests.plugins.greenapi.test_provider import fake_mounts, make, outgoing

pytestmark = pytest.mark.anyio

LOST = magic_phone(Magic.TIMEOUT_AFTER_EFFECT) + "@c.us"  # sent, but the answer never comes
OTHER = "79001112233@c.us"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakeGreenApi:
    return FakeGreenApi(settings=ALL_NOTIFICATIONS_ON)


@pytest.fixture
async def http(fake: FakeGreenApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as client:
        yield client


def provider_for(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> tuple[GreenApiProvider, RecordingHub]:
    provider, hub = make(http, fake)
    provider.landings.clock = fake.clock
    return provider, hub


def since(item: Outgoing, began: float) -> Outgoing:
    """The item as the core asks about it: with the time its lost attempt began."""
    return dataclasses.replace(item, sending_since=began)


async def lose(provider: GreenApiProvider, item: Outgoing) -> None:
    (outcome,) = await provider.send([item])
    assert isinstance(outcome, AmbiguousError)


async def test_a_lost_answer_is_found_in_the_journal_and_a_lost_request_is_not(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, hub = provider_for(http, fake)
    caps = provider.capabilities
    assert caps.finds_sent and caps.settle_seconds > 120  # the journal's own lag
    fake.phone_writes(LOST, "see you at 5")  # typed on the phone before the attempt
    fake.clock.advance(100)  # type: ignore[attr-defined]
    began = fake.clock()
    landed = outgoing(LOST, "see you at 5", job_id=1)
    await lose(provider, landed)
    never = outgoing(OTHER, "see you at 5", job_id=2)
    answers = await provider.find_sent([since(landed, began), since(never, began)])
    assert [type(a) for a in answers] == [Sent, NotLanded]
    assert isinstance(answers[0], Sent)
    assert answers[0].native_id == fake.sent[-1].id_message
    assert answers[0].extra == {"chatId": LOST}
    # Once the gateway has recorded that id for the message, it stands for no other one.
    hub.sent_ids.add(fake.sent[-1].id_message)
    again = outgoing(LOST, "see you at 5", job_id=3)
    assert [type(a) for a in await provider.find_sent([since(again, began)])] == [NotLanded]


async def test_two_identical_texts_in_flight_are_told_apart_by_count(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = provider_for(http, fake)
    began = fake.clock()
    first, second = outgoing(LOST, "ok", job_id=1), outgoing(LOST, "ok", job_id=2)
    await lose(provider, first)  # the second's request never left
    answers = await provider.find_sent([since(first, began), since(second, began)])
    assert [type(a) for a in answers] == [Sent, NotLanded]


async def test_the_journal_shows_a_send_late_so_it_is_asked_only_after_that(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    fake.journal_delay = 120.0  # GREEN: "may take up to 2 minutes"
    provider, _ = provider_for(http, fake)
    began = fake.clock()
    item = since(outgoing(LOST, "late", job_id=1), began)
    await lose(provider, item)
    assert [type(a) for a in await provider.find_sent([item])] == [NotLanded]
    fake.clock.advance(provider.capabilities.settle_seconds)  # type: ignore[attr-defined]
    assert [type(a) for a in await provider.find_sent([item])] == [Sent]


async def test_a_send_waiting_in_the_queue_landed(http: httpx.AsyncClient) -> None:
    fake = FakeGreenApi(settings=ALL_NOTIFICATIONS_ON, state="notAuthorized")
    async with httpx.AsyncClient(mounts=fake_mounts(fake)) as client:
        provider, _ = provider_for(client, fake)
        began = fake.clock()
        photo = Attachment("image", "https://files.example/p/red.jpg")
        item = since(outgoing(LOST, "this one", job_id=1, attachments=(photo,)), began)
        await lose(provider, item)
        (answer,) = await provider.find_sent([item])
    assert [s.status for s in fake.sent] == ["queued"]
    assert isinstance(answer, Sent) and answer.native_id == fake.sent[0].id_message


async def test_a_message_in_parts_is_found_part_by_part(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = provider_for(http, fake)
    began = fake.clock()
    pdf = Attachment("document", "https://files.example/invoice.pdf")
    item = since(outgoing(LOST, "your invoice", job_id=7, attachments=(pdf,)), began)
    answers = []
    for _ in range(2):
        # Each attempt sends one more part and loses its answer; asked, it is found.
        await lose(provider, item)
        (answer,) = await provider.find_sent([item])
        answers.append(answer)
    assert [(s.method, s.text) for s in fake.sent] == [
        ("sendMessage", "your invoice"),
        ("sendFileByUrl", None),
    ]
    assert [type(a) for a in answers] == [NotLanded, Sent]
    final = answers[-1]
    ids = [s.id_message for s in fake.sent]
    assert isinstance(final, Sent) and final.native_id == ids[-1]
    assert final.extra == {"chatId": LOST, "idMessages": ids}
    assert await provider.context.state.items("send:") == []


async def test_what_cannot_be_recognised_is_left_to_a_person(
    http: httpx.AsyncClient, fake: FakeGreenApi
) -> None:
    provider, _ = provider_for(http, fake)
    place = outgoing(OTHER, "", job_id=1, location=Location(55.7, 37.6))
    (answer,) = await provider.find_sent([place])
    assert isinstance(answer, PermanentError) and answer.code == "NOT_RECOGNISABLE"
    assert not [c for c in fake.calls if c.method == "lastOutgoingMessages"]
