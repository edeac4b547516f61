"""Delivery batching: several `send.messages` commands per `batch`, ≤ messages_per_command
each, a chat's items in one command per request; against the fake portal over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from gateway_bitrix24.outbound import SEND, UPDATE
from gateway_bitrix24.packing import MAX_COMMANDS, Command, Item, pack
from gateway_bitrix24.provider import Bitrix24Provider
from gateway_bitrix24.rest import BLOCKED_PROBE_AFTER
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.state import RestCall

from gateway.errors import Throttled
from gateway.models import Edit, Message, Sender
from gateway.providers import Outgoing, Route, Sent
from gateway.settings import settings_from_mapping, validate_instances
from tests.plugins.bitrix24.support import Setup, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def requests_since(portal: FakePortal, before: int) -> list[RestCall]:
    """HTTP requests the portal received (a batch is one, whatever it carries)."""
    return [c for c in portal.calls[before:] if c.batch_key is None]


def commands_since(portal: FakePortal, before: int) -> list[RestCall]:
    """`send.messages` calls run, plain or inside a batch, in the order the portal ran them."""
    return [c for c in portal.calls[before:] if c.method == SEND]


def customer_batch(s: Setup, chats: Sequence[str], count: int) -> list[Outgoing]:
    """`count` messages round-robin over `chats`, texted "{chat}-{n}" with n per chat."""
    route = Route("line1", "wa", "b24", f"{s.portal.member_id}/1")
    numbers = dict.fromkeys(chats, 0)
    batch = []
    for i in range(count):
        chat = chats[i % len(chats)]
        text = f"{chat}-{numbers[chat]}"
        numbers[chat] += 1
        message = Message(chat, f"wamid.{i}", Sender(chat), text=text, timestamp=1.7e9)
        batch.append(Outgoing(i + 1, route, "wa", message))
    return batch


def number(text: str) -> int:
    return int(text.rsplit("-", 1)[1])


async def test_one_pipeline_batch_over_four_chats_is_one_request(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        chats = ["79010000001", "79010000002", "79010000003", "79010000004"]
        before = len(s.portal.calls)
        outcomes = await s.provider.send(customer_batch(s, chats, 35))
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        [request] = requests_since(s.portal, before)
        assert request.method == "batch" and request.status == 200
        commands = commands_since(s.portal, before)
        assert [len(c.params["MESSAGES"]) for c in commands] == [9, 9, 9, 8]
        for command in commands:
            texts = [m["message"]["text"] for m in command.params["MESSAGES"]]
            [chat] = {m["chat"]["id"] for m in command.params["MESSAGES"]}
            assert [number(t) for t in texts] == list(range(len(texts))), chat
        for chat in chats:
            landed = [number(m.text) for m in s.portal.messages(chat_id=chat)]
            assert landed == list(range(9 if chat != chats[-1] else 8))


async def test_small_chats_share_a_command_of_at_most_ten(tmp_path: Path) -> None:
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        chats = [f"7902000{n:04d}" for n in range(25)]  # one message each
        before = len(s.portal.calls)
        outcomes = await s.provider.send(customer_batch(s, chats, 25))
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        assert len(requests_since(s.portal, before)) == 1
        commands = commands_since(s.portal, before)
        assert [len(c.params["MESSAGES"]) for c in commands] == [10, 10, 5]
        sent = [m["chat"]["id"] for c in commands for m in c.params["MESSAGES"]]
        assert sent == chats  # commands and their items keep the order of arrival
        assert [m.chat_id for m in s.portal.messages()] == chats


async def test_a_chat_over_the_command_size_continues_in_the_next_request(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, messages_per_command=10) as s:
        await s.install()
        await s.link()
        before = len(s.portal.calls)
        outcomes = await s.provider.send(customer_batch(s, ["79030000001"], 15))
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        requests = requests_since(s.portal, before)
        assert [c.method for c in requests] == [SEND, SEND]  # one command each: no batch
        assert [len(c.params["MESSAGES"]) for c in requests] == [10, 5]
        assert [number(m.text) for m in s.portal.messages()] == list(range(15))


async def test_messages_per_command_is_an_instance_option(tmp_path: Path) -> None:
    async with running(tmp_path, messages_per_command=3) as s:
        await s.install()
        await s.link()
        before = len(s.portal.calls)
        chats = ["79040000001", "79040000002"]
        outcomes = await s.provider.send(customer_batch(s, chats, 8))
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        # 4 per chat, 3 per command: each chat's 4th message waits for the second request,
        # where the two share one command (a plain call).
        requests = requests_since(s.portal, before)
        assert [c.method for c in requests] == ["batch", SEND]
        sizes = [len(c.params["MESSAGES"]) for c in commands_since(s.portal, before)]
        assert sizes == [3, 3, 2]
        for chat in chats:
            assert [number(m.text) for m in s.portal.messages(chat_id=chat)] == [0, 1, 2, 3]


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", True])
def test_messages_per_command_must_be_a_whole_number(value: Any) -> None:
    settings = settings_from_mapping(
        {
            "public_url": "https://gw.example.com",
            "crms": {
                "b24": {
                    "provider": "bitrix24",
                    "client_id": "local.1",
                    "client_secret": "s",
                    "messages_per_command": value,
                }
            },
        }
    )
    [problem] = validate_instances(settings, {"bitrix24": Bitrix24Provider})
    assert problem.key == "crms.b24.messages_per_command"
    assert "must be a whole number ≥ 1" in str(problem)
    assert "messages_per_command = 10" in problem.fix


def test_defaults_are_ten_commands_of_ten() -> None:
    defaults = Bitrix24Provider.optional_settings
    assert (defaults["max_batch"], defaults["messages_per_command"]) == (100, 10)
    good = {"client_id": "local.1", "client_secret": "s", "messages_per_command": 1}
    assert Bitrix24Provider.validate_settings(good) == []


# packing rules, on their own -------------------------------------------------------------
def item(index: int, chat: str, *, line: int = 1, method: str = SEND, files: int = 0) -> Item:
    route = Route("r", "wa", "b24", f"m/{line}")
    event: Message | Edit = Message(chat, f"w{index}", Sender(chat))
    if method != SEND:
        event = Edit(chat, f"w{index}", "changed")
    outgoing = Outgoing(index, route, "wa", event)
    return Item(index, outgoing, line, method, {"message": {"id": f"w{index}"}}, "", files)


def shape(requests: list[list[Command]]) -> list[list[tuple[int, str, list[int]]]]:
    return [[(c.line, c.method, [i.index for i in c.items]) for c in r] for r in requests]


def test_a_chat_never_has_two_commands_in_one_request() -> None:
    # a: 6, b: 6 interleaved -> b does not fit next to a (10 per command): its own command.
    items = [item(i, "b" if i % 2 else "a") for i in range(12)]
    requests = pack(items, 10)
    assert shape(requests) == [[(1, SEND, [0, 2, 4, 6, 8, 10]), (1, SEND, [1, 3, 5, 7, 9, 11])]]


def test_an_edit_after_a_send_of_the_same_chat_waits_for_the_next_request() -> None:
    items = [item(0, "a"), item(1, "b"), item(2, "a", method=UPDATE), item(3, "a")]
    assert shape(pack(items, 10)) == [
        [(1, SEND, [0, 1])],
        [(1, UPDATE, [2])],
        [(1, SEND, [3])],
    ]


def test_lines_and_files_and_the_command_limit() -> None:
    items = [item(0, "a", line=1), item(1, "b", line=2), item(2, "c", line=1)]
    assert shape(pack(items, 10)) == [[(1, SEND, [0, 2]), (2, SEND, [1])]]
    # 10 files per request: the second file-heavy chat waits, the text-only one does not.
    items = [item(0, "a", files=6), item(1, "b", files=6), item(2, "c")]
    assert shape(pack(items, 10)) == [[(1, SEND, [0, 2])], [(1, SEND, [1])]]
    # One message with more files than that still goes, alone.
    assert shape(pack([item(0, "a", files=12), item(1, "a")], 10)) == [
        [(1, SEND, [0])],
        [(1, SEND, [1])],
    ]
    # A full request (50 commands) still fills the free room of a command of the chat's
    # line; what does not fit goes next.
    items = [item(i, f"c{i}", line=i) for i in range(MAX_COMMANDS)]
    items += [item(MAX_COMMANDS + k, "x", line=0) for k in range(12)]
    first, second = pack(items, 10)
    assert len(first) == MAX_COMMANDS
    assert [i.index for i in first[0].items] == [0, *range(50, 59)]
    assert shape([second]) == [[(0, SEND, [59, 60, 61])]]


async def test_a_method_blocked_inside_a_batch_is_probed_with_one_plain_call(
    tmp_path: Path,
) -> None:
    """A blocked command inside a `batch` says nothing of when the block ends (the batch's
    own `operating_reset_at` is the batch method's window): pause briefly, then send one
    command alone, whose 429 carries the method's reset time; batch again once it passes."""
    async with running(tmp_path) as s:
        await s.install()
        await s.link()
        limits = s.provider.rest.limits
        now = [limits.clock()]
        limits.clock = lambda: now[0]
        member = s.portal.member_id
        batch = customer_batch(s, ["79010000001", "79010000002"], 20)
        s.portal.faults.block_method(SEND, seconds=600)

        before = len(s.portal.calls)
        outcomes = await s.provider.send(batch)
        assert all(isinstance(o, Throttled) for o in outcomes), outcomes
        assert {o.retry_after for o in outcomes if isinstance(o, Throttled)} == {
            BLOCKED_PROBE_AFTER
        }
        [request] = requests_since(s.portal, before)
        assert request.method == "batch"
        assert limits.probing(member, SEND)

        # Still blocked: one command goes alone and learns the real end of the block.
        now[0] += BLOCKED_PROBE_AFTER + 0.1
        before = len(s.portal.calls)
        outcomes = await s.provider.send(batch)
        assert all(isinstance(o, Throttled) for o in outcomes), outcomes
        [probe] = requests_since(s.portal, before)
        assert (probe.method, probe.error) == (SEND, "OPERATION_TIME_LIMIT")
        paused = limits.paused_for(member, SEND)
        assert paused is not None and paused > 500

        # The block is over: the probe lands and the method is batched again.
        s.portal.faults.clear()
        now[0] += 700
        before = len(s.portal.calls)
        outcomes = await s.provider.send(batch)
        first = [
            o
            for o, out in zip(outcomes, batch, strict=True)
            if out.event.conversation_id == "79010000001"
        ]
        rest = [
            o
            for o, out in zip(outcomes, batch, strict=True)
            if out.event.conversation_id != "79010000001"
        ]
        assert all(isinstance(o, Sent) for o in first), outcomes
        assert all(isinstance(o, Throttled) for o in rest), outcomes
        assert not limits.probing(member, SEND)
        before = len(s.portal.calls)
        assert all(isinstance(o, Sent) for o in await s.provider.send(batch))
        [request] = requests_since(s.portal, before)
        assert request.method == "batch"  # both chats again, in one request
