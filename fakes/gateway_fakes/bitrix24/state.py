"""Plain dataclasses holding everything the fake portal remembers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx


@dataclass
class Connector:
    """A connector registered with `imconnector.register` (flags as stored)."""

    id: str
    name: str
    icon: dict[str, Any]
    placement_handler: str
    icon_disabled: dict[str, Any] | None = None
    del_external_messages: bool = True
    edit_internal_messages: bool = True
    del_internal_messages: bool = True
    newsletter: bool = True
    need_system_messages: bool = True
    need_signature: bool = True
    chat_group: bool = False
    comment: str | None = None


@dataclass
class LineStatus:
    """The status row of one connector on one open line."""

    connector: str
    line: int
    active: bool = False
    connection: bool = False
    register: bool = False
    error: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.active and self.connection

    @property
    def ok(self) -> bool:
        return self.active and self.connection and self.register and not self.error


@dataclass
class OpenLine:
    id: int
    name: str
    active: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def as_config(self) -> dict[str, Any]:
        # Bitrix answers configs with string values only ("Y"/"N", ids as strings).
        return {
            "ID": str(self.id),
            "ACTIVE": "Y" if self.active else "N",
            "LINE_NAME": self.name,
            "CRM": "Y",
            "CRM_CREATE": "lead",
            "QUEUE_TYPE": "evenly",
            "QUEUE_TIME": "60",
            "WELCOME_MESSAGE": "Y",
            "LANGUAGE_ID": "en",
            **{k: str(v) for k, v in self.settings.items()},
        }


@dataclass
class EventBinding:
    id: int
    event: str
    handler: str
    auth_type: int = 0
    offline: bool = False


@dataclass
class Session:
    id: int
    parent_id: int = 0
    closed: bool = False


@dataclass
class Chat:
    """One external chat of a connector on a line, as the operator sees it."""

    connector: str
    line: int
    external_id: str
    bitrix_chat_id: int
    user_id: int
    name: str | None = None
    sessions: list[Session] = field(default_factory=list)

    @property
    def session(self) -> Session | None:
        if self.sessions and not self.sessions[-1].closed:
            return self.sessions[-1]
        return None


@dataclass
class ChatMessage:
    """A message in an open-line chat: from the client (via REST) or an operator."""

    im_message_id: int
    connector: str
    line: int
    chat_id: str
    bitrix_chat_id: int
    author: Literal["client", "operator"]
    author_id: int
    text: str
    files: list[dict[str, Any]] = field(default_factory=list)
    external_ids: list[str] = field(default_factory=list)
    session_id: int | None = None
    date: int | None = None
    user: dict[str, Any] = field(default_factory=dict)
    sending: bool = False
    delivered: bool = False
    read: bool = False
    deleted: bool = False
    failed: bool = False
    history: list[str] = field(default_factory=list)


@dataclass
class StoredFile:
    code: str
    name: str
    content: bytes
    mime: str


@dataclass
class RestCall:
    """One REST call as the portal saw it (batch sub-calls have `batch_key`)."""

    method: str
    params: dict[str, Any]
    token: str | None
    time: float
    status: int = 0
    error: str | None = None
    result: Any = None
    batch_key: str | None = None


@dataclass
class EventDelivery:
    """One POST of an event to one handler; `response` is None if it failed."""

    event: str
    handler: str
    form: list[tuple[str, str]]
    response: httpx.Response | None = None
    error: str | None = None

    @property
    def status(self) -> int | None:
        return self.response.status_code if self.response is not None else None


@dataclass
class Emission:
    """What an operator action produced: the stored message and the deliveries."""

    event: str
    data: Any
    deliveries: list[EventDelivery]
    message: ChatMessage | None = None

    @property
    def responses(self) -> list[httpx.Response]:
        return [d.response for d in self.deliveries if d.response is not None]


@dataclass
class AppRecord:
    """What `app.info` reports; tests may change fields (e.g. `status`, `license`)."""

    id: int = 5
    code: str = "vendor.whatschat"
    version: int = 1
    status: str = "L"
    payment_expired: str = "N"
    days: int | None = None
    language_id: str = "en"
    license: str = "en_project"
    license_type: str = "project"
    license_family: str = "project"


def _counter(start: int) -> itertools.count[int]:
    return itertools.count(start)


@dataclass
class PortalState:
    """All mutable portal data; ids come from counters so runs are repeatable."""

    connectors: dict[str, Connector] = field(default_factory=dict)
    statuses: dict[tuple[str, int], LineStatus] = field(default_factory=dict)
    lines: dict[int, OpenLine] = field(default_factory=dict)
    bindings: list[EventBinding] = field(default_factory=list)
    chats: dict[tuple[str, int, str], Chat] = field(default_factory=dict)
    messages: list[ChatMessage] = field(default_factory=list)
    external_users: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The last `user` block per external user (imconnector keeps its MD5), and the
    #: photos (`user.picture.url`) downloaded for Bitrix24 users.
    user_blocks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: The name each external user shows: rewritten from every block that differs from the
    #: last, "Guest" when it has neither name nor title (preparationUserFields).
    user_names: dict[int, str] = field(default_factory=dict)
    photos: dict[int, list[str]] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    placements: list[dict[str, Any]] = field(default_factory=list)
    line_ids: itertools.count[int] = field(default_factory=lambda: _counter(1))
    binding_ids: itertools.count[int] = field(default_factory=lambda: _counter(555))
    user_ids: itertools.count[int] = field(default_factory=lambda: _counter(585))
    chat_ids: itertools.count[int] = field(default_factory=lambda: _counter(1807))
    session_ids: itertools.count[int] = field(default_factory=lambda: _counter(323))
    message_ids: itertools.count[int] = field(default_factory=lambda: _counter(86497))
    file_ids: itertools.count[int] = field(default_factory=lambda: _counter(9001))

    def status(self, connector: str, line: int) -> LineStatus:
        """Get or create the status row (as `Status::getInstance` does)."""
        key = (connector, line)
        if key not in self.statuses:
            self.statuses[key] = LineStatus(connector=connector, line=line)
        return self.statuses[key]

    def ensure_chat(
        self, connector: str, line: int, external_id: str, user_id: int, name: str | None
    ) -> tuple[Chat, Session | None]:
        """Find or open the chat; returns the session if a new one had to start."""
        key = (connector, line, external_id)
        chat = self.chats.get(key)
        if chat is None:
            chat = Chat(connector, line, external_id, next(self.chat_ids), user_id)
            self.chats[key] = chat
        if name:
            chat.name = name
        if chat.session is not None:
            return chat, None
        parent = chat.sessions[-1].id if chat.sessions else 0
        session = Session(next(self.session_ids), parent_id=parent)
        chat.sessions.append(session)
        return chat, session

    def line_ok(self, connector: str, line: int) -> bool:
        row = self.statuses.get((connector, line))
        open_line = self.lines.get(line)
        return row is not None and row.ok and open_line is not None and open_line.active

    def find_message(self, im_message_id: int) -> ChatMessage | None:
        for message in self.messages:
            if message.im_message_id == im_message_id:
                return message
        return None
