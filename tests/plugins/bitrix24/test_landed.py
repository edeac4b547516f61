"""`find_sent`: reading open-line chats back to see whether customer messages landed,
against the fake portal over HTTP (`imopenlines.session.history.get` in one `batch`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gateway_bitrix24.landed import HISTORY

from gateway.errors import PermanentError
from gateway.models import Edit, Message, Sender
from gateway.providers import NotLanded, Outgoing, Route, Sent
from tests.plugins.bitrix24.support import Setup, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def outgoing(s: Setup, chat: str, n: int, job: int = 1) -> Outgoing:
    route = Route("line1", "wa", "b24", f"{s.portal.member_id}/1")
    message = Message(chat, f"wamid.{chat}.{n}", Sender(chat), text=f"{chat}-{n}")
    return Outgoing(job, route, "wa", message)


async def test_landed_and_missing_messages_of_several_chats_in_one_request(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        chats = ["79010000001", "79010000002", "79010000003"]
        # One message per chat reaches the portal: the chats' ids are known from then on.
        sent = await s.provider.send([outgoing(s, chat, 0) for chat in chats])
        assert all(isinstance(o, Sent) for o in sent)
        landed = [outgoing(s, chat, 1) for chat in chats[:2]]
        assert all(isinstance(o, Sent) for o in await s.provider.send(landed))
        asked = [*landed, outgoing(s, chats[2], 1), outgoing(s, chats[0], 2)]
        before = len(s.portal.calls)
        answers = await s.provider.find_sent(asked)
        assert [type(a) for a in answers] == [Sent, Sent, NotLanded, NotLanded]
        found = answers[0]
        assert isinstance(found, Sent) and found.native_id == "wamid.79010000001.1"
        assert found.extra["chat_id"] == chats[0] and found.extra["bitrix_chat_id"]
        requests = [c for c in s.portal.calls[before:] if c.batch_key is None]
        assert [r.method for r in requests] == ["batch"]
        reads = [c for c in s.portal.calls[before:] if c.method == HISTORY]
        assert len(reads) == 3 and all("SESSION_ID" in r.params for r in reads)


async def test_a_message_that_opened_a_new_session_is_found_there(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        chat = "79010000001"
        await s.provider.send([outgoing(s, chat, 0)])
        await s.portal.dialog_finish(1, chat)
        # The gateway dies during this send: its result (the new session) is never seen.
        stray = outgoing(s, chat, 1)
        await s.provider.outbox.send([stray])
        assert [type(a) for a in await s.provider.find_sent([stray])] == [Sent]
        assert [type(a) for a in await s.provider.find_sent([outgoing(s, chat, 2)])] == [NotLanded]


async def test_a_chat_never_reached_cannot_be_asked_and_edits_may_be_repeated(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        first = outgoing(s, "79010000009", 0)
        edit = Outgoing(
            2, first.route, "wa", Edit("79010000009", "wamid.x", "new"), target_native_id="x"
        )
        unknown, repeat = await s.provider.find_sent([first, edit])
        assert isinstance(unknown, PermanentError) and unknown.code == "CHAT_UNKNOWN"
        assert isinstance(repeat, NotLanded)
