"""What the plugin remembers per portal and per open line, in the gateway store.

A portal is keyed by its `member_id` (stable; the domain may change). Its record holds the
OAuth pair of the admin who installed the app, the portal REST base (`client_endpoint`, taken
from the OAuth server's answer, never from a request), and the `application_token` that
authenticates Bitrix24's event POSTs. Keys in the instance's key/value space:

    portal:{member_id}          PortalRecord
    line:{member_id}:{line_id}  LineRecord (only while a line is parked)
    user:{member_id}:{line}:{chat}  the external user id sent for a chat, when not the chat id
    form-secret                 HMAC key of the settings page's form tokens
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from gateway import JSON, ProviderState

PORTAL_PREFIX = "portal:"
LINE_PREFIX = "line:"

#: `PortalRecord.problem` values; each makes deliveries to that portal fail permanently.
NEEDS_REINSTALL = "needs_reinstall"
UNPAID = "unpaid"


@dataclass(slots=True)
class PortalRecord:
    member_id: str
    client_endpoint: str
    server_endpoint: str
    access_token: str
    refresh_token: str
    application_token: str
    expires_at: float = 0.0
    scope: str = ""
    status: str = ""
    installed_at: float = 0.0
    refreshed_at: float = 0.0
    problem: str | None = None
    problem_detail: str | None = None
    setup_error: str | None = None
    #: The portal's language (`LANGUAGE_ID`), for texts the gateway posts on its own.
    language: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """`https://host[:port]` of the portal, for absolute file links."""
        parts = urlsplit(self.client_endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def domain(self) -> str:
        return urlsplit(self.client_endpoint).netloc

    def to_json(self) -> dict[str, JSON]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> PortalRecord | None:
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None


@dataclass(slots=True)
class LineRecord:
    """An open line the gateway stopped sending to (Bitrix24 said NOT_ACTIVE_LINE)."""

    member_id: str
    line: int
    code: str
    text: str
    parked_at: float

    def to_json(self) -> dict[str, JSON]:
        return asdict(self)


def target_of(member_id: str, line: int | str) -> str:
    """A route target: `{member_id}/{line id}`."""
    return f"{member_id}/{line}"


def parse_target(target: str | None) -> tuple[str, int] | None:
    if not target or "/" not in target:
        return None
    member_id, _, line = target.rpartition("/")
    if not member_id or not line.isascii() or not line.isdigit():
        return None
    return member_id, int(line)


class PortalStore:
    """Portal and line records, cached in memory over the durable key/value store.

    The cache is only a shortcut for the hot path (event verification). Every process
    shares the store: a write here announces itself (`state.changed()`), and the cache is
    read again whenever the state's `generation` says some process changed it, so an
    install, a reinstall's new `application_token`, new tokens or an uninstall made in one
    process take effect in the others within `[store] state_check_seconds`. What must be
    current at the very moment (the refresh token) is re-read with `fresh=True` under a lock.
    """

    def __init__(self, state: ProviderState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._portals: dict[str, PortalRecord] = {}
        self._lines: dict[tuple[str, int], LineRecord] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._loaded = False
        self._generation = 0

    async def _current(self) -> None:
        """Read the records again if some process changed them since they were read."""
        if not self._loaded or self._generation != self.state.generation:
            await self.load()

    async def load(self) -> None:
        # Taken before reading: a change announced meanwhile makes the next look read again.
        self._generation = self.state.generation
        self._users.clear()
        self._portals.clear()
        for key, value in await self.state.items(PORTAL_PREFIX):
            record = PortalRecord.from_json(value)
            if record is not None and key == PORTAL_PREFIX + record.member_id:
                self._portals[record.member_id] = record
        self._lines.clear()
        for _key, value in await self.state.items(LINE_PREFIX):
            if isinstance(value, dict):
                try:
                    line = LineRecord(**value)
                except TypeError:
                    continue
                self._lines[(line.member_id, line.line)] = line
        self._loaded = True

    async def get(self, member_id: str, *, fresh: bool = False) -> PortalRecord | None:
        await self._current()
        if fresh or member_id not in self._portals:
            record = PortalRecord.from_json(await self.state.get(PORTAL_PREFIX + member_id))
            if record is None:
                self._portals.pop(member_id, None)
                return None
            self._portals[member_id] = record
        return self._portals[member_id]

    async def put(self, record: PortalRecord) -> None:
        await self.state.put(PORTAL_PREFIX + record.member_id, record.to_json())
        self._portals[record.member_id] = record
        await self.state.changed()

    async def update(
        self, member_id: str, change: Callable[[PortalRecord], None]
    ) -> PortalRecord | None:
        """Re-read, change and store a record under its lock (tokens may have rotated)."""
        async with self.lock(member_id):
            record = await self.get(member_id, fresh=True)
            if record is None:
                return None
            change(record)
            await self.put(record)
            return record

    async def delete(self, member_id: str) -> None:
        await self.state.delete(PORTAL_PREFIX + member_id)
        self._portals.pop(member_id, None)
        for parked in [k for k in self._lines if k[0] == member_id]:
            await self.unpark(*parked)
        for key, _ in await self.state.items(f"user:{member_id}:"):
            await self.state.delete(key)
            self._users.pop(key, None)
        await self.state.changed()

    async def all(self) -> list[PortalRecord]:
        await self._current()
        return list(self._portals.values())

    def lock(self, member_id: str) -> AbstractAsyncContextManager[None]:
        """Held while refreshing: a refresh token works once, so only one may try."""
        return self.state.lock(f"tokens:{member_id}")

    # parked lines ---------------------------------------------------------------------
    def parked(self, member_id: str, line: int) -> LineRecord | None:
        return self._lines.get((member_id, line))

    def parked_lines(self) -> list[LineRecord]:
        return list(self._lines.values())

    async def park(self, member_id: str, line: int, code: str, text: str) -> LineRecord:
        record = LineRecord(member_id, line, code, text, self.clock())
        await self.state.put(f"{LINE_PREFIX}{member_id}:{line}", record.to_json())
        self._lines[(member_id, line)] = record
        await self.state.changed()
        return record

    async def unpark(self, member_id: str, line: int) -> None:
        if self._lines.pop((member_id, line), None) is not None:
            await self.state.delete(f"{LINE_PREFIX}{member_id}:{line}")
            await self.state.changed()

    # chat users -----------------------------------------------------------------------
    async def remember_user(
        self, member_id: str, line: int, chat_id: str, user: Mapping[str, Any]
    ) -> None:
        """Keep the `user` block last given for a chat's customer (without the picture).

        The gateway's own messages into the chat (notes, mirrors) repeat it: Bitrix24 keys a
        chat by `user.id`, and rewrites its user from any block that differs from the last
        (a block of the id alone renames the customer "Guest")."""
        key = f"user:{member_id}:{line}:{chat_id}"
        block = {k: v for k, v in user.items() if k != "picture"}
        if self._users.get(key) == block:
            return
        if key not in self._users and await self.state.get(key) == block:
            self._users[key] = block  # kept already (another process, before a restart)
            return
        await self.state.put(key, block)
        self._users[key] = block

    async def user_of(self, member_id: str, line: int, chat_id: str) -> str:
        """The `user.id` to write into a chat as its customer (Bitrix24 keys chats by it)."""
        return str((await self.user_block_of(member_id, line, chat_id))["id"])

    async def user_block_of(self, member_id: str, line: int, chat_id: str) -> dict[str, Any]:
        """The chat's customer as last given (`{"id": chat_id}` when none was)."""
        key = f"user:{member_id}:{line}:{chat_id}"
        if key not in self._users:
            value = await self.state.get(key)
            if isinstance(value, str):
                value = {"id": value}  # kept by an earlier version: the id alone
            if not isinstance(value, dict) or not value.get("id"):
                return {"id": chat_id}
            self._users[key] = value
        return dict(self._users[key])
