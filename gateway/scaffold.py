"""`gateway new-plugin NAME`: a skeleton plugin distribution that passes its own tests.

It writes `NAME/` with a `pyproject.toml` declaring the `gateway.plugins` entry point, the
package `gateway_NAME` (a channel provider for a small JSON messenger API: webhooks with a
secret header, the webhook registered at start, sends mapped to the SDK's errors), a fake of
that API, and tests: the conformance kit and a round trip. Replace the API's details with
your messenger's; the tests tell you what still holds.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "gateway-__NAME__"
version = "0.1.0"
description = "WhatsChat Gateway plugin: the __NAME__ channel"
requires-python = ">=3.11"
dependencies = ["whatschat-gateway", "httpx"]

[project.entry-points."gateway.plugins"]
__NAME__ = "gateway___NAME__"

[tool.setuptools]
packages = ["gateway___NAME__"]

[tool.ruff]
line-length = 100

# `lint-imports` (pip install import-linter): the plugin imports only the public `gateway`
# (its tests may use `gateway.testing` too); every other gateway module is internal.
[tool.importlinter]
root_packages = ["gateway___NAME__", "gateway"]

[[tool.importlinter.contracts]]
name = "The plugin imports only the facade `gateway`"
type = "forbidden"
source_modules = ["gateway___NAME__"]
forbidden_modules = ["gateway.*"]
allow_indirect_imports = true

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = [".", "tests"]
addopts = "-p no:cacheprovider --import-mode=importlib"
"""

_INIT = '''\
"""The __NAME__ channel plugin."""

from collections.abc import Callable

from gateway import Provider, hookimpl

from gateway___NAME__.provider import __CLASS__Channel


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(__CLASS__Channel)
'''

_PROVIDER = '''\
"""The __NAME__ channel: customers' messages in by webhook, operators' answers out by HTTP.

The API (replace it with your messenger's):
* `POST {api_url}/webhook {"url", "secret"}` points the webhook at the gateway (at start);
* webhooks: `POST` with header `X-Webhook-Secret` and
  `{"messages": [{"id", "chat", "from", "name", "text"}]}`;
* `POST {api_url}/messages {"chat", "text"}` with `Authorization: Bearer {token}` answers
  `{"id"}`; errors answer `{"error": "what is wrong"}` with a 4xx or 5xx status.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
from gateway import (
    AmbiguousError,
    BadRequest,
    Capabilities,
    ChannelProvider,
    InboundEvent,
    InstanceContext,
    Message,
    Outcome,
    Outgoing,
    PermanentError,
    Sender,
    Sent,
    TemporaryError,
    Throttled,
    Unauthorized,
    WebhookRequest,
    WebhookResult,
    send_each,
)

WEBHOOK_HEADER = "x-webhook-secret"


class __CLASS__Channel(ChannelProvider):
    name: ClassVar[str] = "__NAME__"
    description: ClassVar[str] = "the __NAME__ messenger"
    capabilities = Capabilities(media_kinds=frozenset(), max_text_length=4096)
    required_settings: ClassVar[Mapping[str, str]] = {
        "api_url": "the API's base URL",
        "token": "the API token",
        "webhook_secret": "a random string the webhook must carry",
    }
    secret_settings: ClassVar[frozenset[str]] = frozenset({"token", "webhook_secret"})

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        self.api_url = str(self.config["api_url"]).rstrip("/")
        self.secret = str(self.config["webhook_secret"])

    async def start(self) -> None:
        url = self.context.hub.webhook_url(self.instance)
        await self._call("/webhook", {"url": url, "secret": self.secret})

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        given = request.headers.get(WEBHOOK_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret.encode()):
            raise Unauthorized("missing or wrong webhook secret")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise BadRequest("the body needs a messages list", status=422)
        # Every item is checked before any is returned: a bad one refuses the whole body.
        return WebhookResult(events=[_event(i, item) for i, item in enumerate(items)])

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return await send_each(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> Outcome:
        event = item.event
        if not isinstance(event, Message):
            raise PermanentError(f"cannot {event.kind} a sent message", code="unsupported")
        result = await self._call("/messages", {"chat": event.conversation_id, "text": event.text})
        return Sent(str(result["id"]))

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.config['token']}"}
        try:
            response = await self.context.http.post(self.api_url + path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(f"cannot reach the API: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            # The request left: it may have been sent, so it is not resent blindly.
            raise AmbiguousError(f"no answer to {path}: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        if response.status_code < 300:
            return data
        text = str(data.get("error") or f"HTTP {response.status_code}")
        code = str(response.status_code)
        if response.status_code == 429:
            raise Throttled(text, code=code)
        if response.status_code >= 500:
            raise TemporaryError(text, code=code)
        raise PermanentError(text, code=code)


def _event(index: int, item: Any) -> InboundEvent:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object", status=422)
    for key in ("id", "chat", "from"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise BadRequest(f"{where}.{key} must be a non-empty string", status=422)
    if not isinstance(item.get("text", ""), str):
        raise BadRequest(f"{where}.text must be a string", status=422)
    message = Message(
        conversation_id=item["chat"],
        native_id=item["id"],
        sender=Sender(id=item["from"], name=item.get("name") or None),
        text=item.get("text", ""),
    )
    # The API's own id: the same message redelivered gets the same key.
    return InboundEvent(f"message:{item['id']}", message)
'''

_FAKE = '''\
"""A fake of the __NAME__ API, as its documentation describes it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Fake__CLASS__:
    token: str = "fake-__NAME__-api-token-0123456789"
    host: str = "api.__NAME__.test"
    http: httpx.AsyncClient | None = None
    webhook: dict[str, Any] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def api_url(self) -> str:
        return f"https://{self.host}"

    @property
    def app(self) -> Starlette:
        routes = [
            Route("/webhook", self._set_webhook, methods=["POST"]),
            Route("/messages", self._message, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def customer_writes(self, chat: str, text: str) -> str:
        message_id = f"in-{next(self._ids)}"
        item = {"id": message_id, "chat": chat, "from": chat, "name": "Ivan", "text": text}
        self.pending.append({"messages": [item]})
        return message_id

    async def deliver_webhooks(self) -> list[int]:
        assert self.http is not None and self.webhook, "no webhook set"
        statuses = []
        while self.pending:
            headers = {"X-Webhook-Secret": self.webhook["secret"]}
            body = self.pending.pop(0)
            response = await self.http.post(self.webhook["url"], json=body, headers=headers)
            statuses.append(response.status_code)
        return statuses

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def _set_webhook(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "bad token"}, 401)
        self.webhook = await request.json()
        return JSONResponse({"ok": True})

    async def _message(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "bad token"}, 401)
        body = await request.json()
        if not body.get("chat"):
            return JSONResponse({"error": "chat is required"}, 400)
        self.sent.append(body)
        return JSONResponse({"id": f"out-{next(self._ids)}"})
'''

_TESTS = '''\
"""The __NAME__ plugin: the gateway's conformance kit and a round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fake___NAME__ import Fake__CLASS__
from gateway.testing import GatewayHarness, Recorder, running_gateway
from gateway.testing.conformance import ChannelConformance, ChannelSubject
from starlette.types import ASGIApp

import gateway___NAME__

SECRET = "__NAME__-webhook-secret-0123"


class __CLASS__Subject(ChannelSubject):
    provider: ClassVar[str] = "__NAME__"
    send_path: ClassVar[str] = r"/messages$"
    conversation: ClassVar[str] = "chat-1"

    def __init__(self) -> None:
        self.fake = Fake__CLASS__()

    def plugins(self) -> list[object]:
        return [gateway___NAME__]

    def settings(self) -> dict[str, Any]:
        return {"api_url": self.fake.api_url, "token": self.fake.token, "webhook_secret": SECRET}

    def apps(self) -> dict[str, ASGIApp]:
        return {self.fake.host: self.fake.app}

    async def started(self, harness: GatewayHarness, webhooks: httpx.AsyncClient) -> None:
        self.fake.http = webhooks

    async def writes(self, text: str) -> None:
        self.fake.customer_writes("chat-1", text)
        await self.fake.deliver_webhooks()

    def error_answer(self, status: int, text: str) -> tuple[bytes, dict[str, str]]:
        body = httpx.Response(status, json={"error": text}).content
        return body, {"content-type": "application/json"}


class Test__CLASS__Conformance(ChannelConformance):
    @pytest.fixture
    def subject(self) -> __CLASS__Subject:
        return __CLASS__Subject()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_round_trip(tmp_path: Path) -> None:
    fake, crm = Fake__CLASS__(), Recorder(name="crm")
    channel = {"api_url": fake.api_url, "token": fake.token, "webhook_secret": SECRET}
    settings = {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path}/gw.db"},
        "channels": {"chat": {"provider": "__NAME__", **channel}},
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "t"}},
        "routes": {"main": {"channel": "chat", "crm": "crm"}},
    }
    apps = {fake.host: fake.app, "crm.test": crm.app}
    async with running_gateway(settings, apps=apps, plugins=[gateway___NAME__]) as h:
        assert fake.webhook == {"url": "http://gateway.test/webhooks/chat", "secret": SECRET}
        fake.http = h.client
        fake.customer_writes("chat-1", "hello")
        assert await fake.deliver_webhooks() == [200]
        await crm.wait_count(1)
        answer = {"id": "op-1", "chat": "chat-1", "text": "hi!"}
        auth = {"authorization": "Bearer t"}
        await h.client.post("/webhooks/crm", json={"messages": [answer]}, headers=auth)
        await crm.wait_for(lambda r: len(r.acks) == 1)
    assert crm.texts() == ["hello"]
    assert fake.sent == [{"chat": "chat-1", "text": "hi!"}]
'''

_README = """\
# gateway-__NAME__

A WhatsChat Gateway channel plugin. `pip install -e .` next to the gateway, then
`provider = "__NAME__"` in a `[channels.NAME]` table. Run its tests with `python -m pytest`.
"""


def write_skeleton(name: str, directory: Path) -> Path:
    """Write the skeleton of plugin `name` into `directory/name`; returns that folder.

    Raises `ValueError` when `name` is not a lower-case identifier or the folder exists.
    """
    if not NAME.match(name):
        raise ValueError(
            f"{name!r} is not a plugin name: use lower-case letters, digits and _ (e.g. telegram)"
        )
    root = directory / name
    if root.exists():
        raise ValueError(f"{root} exists already; choose another name or folder")
    class_name = "".join(part.capitalize() for part in name.split("_"))
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"gateway_{name}/__init__.py": _INIT,
        f"gateway_{name}/provider.py": _PROVIDER,
        f"tests/fake_{name}.py": _FAKE,
        f"tests/test_{name}.py": _TESTS,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.replace("__NAME__", name).replace("__CLASS__", class_name))
    return root
