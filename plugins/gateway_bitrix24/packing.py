"""How one portal's items are cut into commands and the commands into HTTP requests.

A *command* is one `imconnector.send.messages` / `update.messages` / `delete.messages` call
for one line with at most `per_command` items. A *request* is what one HTTP call carries:
one command, or a `batch` of up to 50. The portal's bucket counts a request once, whatever
it carries, so the more messages per request the faster a backlog drains.

The order guarantee: within one request, all items of a chat (line + conversation id) are in
ONE command. A `batch` runs its commands independently; if a chat's items were in two of
them, the first could fail while the second landed, and a later message would overtake an
earlier one. A chat whose items do not fit (its command is full, the request has no room for
another command, the files budget is spent, or its next item is of another kind) continues
in a later request, which the caller sends only after this one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import Outgoing

#: Commands per `batch` (Bitrix24's limit).
MAX_COMMANDS = 50
#: Bitrix24 downloads files while answering, within its 60 s request limit.
MAX_FILES_PER_REQUEST = 10

Chat = tuple[int, str]


@dataclass(slots=True)
class Item:
    index: int
    outgoing: Outgoing
    line: int
    method: str
    payload: dict[str, Any]
    native_id: str
    files: int = 0
    #: What to remember once the item is accepted (a customer photo given: key, mark).
    remember: tuple[str, str] | None = None

    @property
    def chat(self) -> Chat:
        return (self.line, self.outgoing.event.conversation_id)


@dataclass(slots=True)
class Command:
    line: int
    method: str
    items: list[Item] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(item.files for item in self.items)


def pack(items: Sequence[Item], per_command: int) -> list[list[Command]]:
    """Requests to send one after another; see the module docstring for the rules."""
    per_command = max(1, per_command)
    chats: dict[Chat, deque[Item]] = {}
    for item in items:
        chats.setdefault(item.chat, deque()).append(item)
    requests: list[list[Command]] = []
    while chats:
        requests.append(_request(chats, per_command))
        chats = {chat: queue for chat, queue in chats.items() if queue}
    return requests


def _request(chats: dict[Chat, deque[Item]], per_command: int) -> list[Command]:
    """One request, taking from the front of each chat's queue (chats in order of first
    appearance, so commands are too)."""
    request: list[Command] = []
    files = taken = 0
    for queue in chats.values():
        head = queue[0]
        # The first item of a request always goes, whatever its files, so packing ends.
        if taken and files + head.files > MAX_FILES_PER_REQUEST:
            continue
        run = _run(queue, per_command)
        command = _place(request, head, run, per_command)
        if command is None:
            continue
        for _ in range(run):
            item = queue[0]
            if len(command.items) >= per_command or (
                taken and files + item.files > MAX_FILES_PER_REQUEST
            ):
                break
            command.items.append(queue.popleft())
            files += item.files
            taken += 1
    for command in request:
        # Chats were placed one after another; the portal sees the items in arrival order.
        command.items.sort(key=lambda item: item.index)
    return request


def _run(queue: deque[Item], per_command: int) -> int:
    """How many items from the front of a chat's queue could go in one command."""
    method = queue[0].method
    run = 0
    for item in queue:
        if item.method != method or run == per_command:
            break
        run += 1
    return run


def _place(request: list[Command], head: Item, run: int, per_command: int) -> Command | None:
    """The command a chat's items join: the first of its line and kind with room for all of
    them, else a new one, else (request full) the one with the most room left."""
    candidates = [
        c
        for c in request
        if c.line == head.line and c.method == head.method and len(c.items) < per_command
    ]
    for command in candidates:
        if per_command - len(command.items) >= run:
            return command
    if len(request) < MAX_COMMANDS:
        command = Command(head.line, head.method)
        request.append(command)
        return command
    return max(candidates, key=lambda c: per_command - len(c.items), default=None)
