"""Test providers: a channel and a CRM speaking a small JSON protocol over real HTTP.

They prove the core on its own, and show plugin authors a complete provider in one page.
Inbound webhook (`POST /webhooks/{instance}`, header `Authorization: Bearer <token>`)::

    {"messages": [{"id": "m1", "chat": "c1", "from": "u1", "name": "Ann", "text": "hi",
                   "quote": "m0", "attachments": [{"kind": "image", "url": "https://..."}]}],
     "edits": [{"id": "m1", "chat": "c1", "text": "hi!"}],
     "deletes": [{"id": "m1", "chat": "c1"}],
     "statuses": [{"id": "recorder-3", "status": "read", "chat": "c1"}]}

Outbound calls go to `base_url` (`/send`, `/acks`, `/statuses`), served in tests by
`gateway.testing.recorder.Recorder`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import httpx
import orjson

from gateway.errors import (
    AmbiguousError,
    BadRequest,
    PermanentError,
    TemporaryError,
    Throttled,
    Unauthorized,
)
from gateway.hookspecs import hookimpl
from gateway.models import (
    Attachment,
    Delete,
    DeliveryStatus,
    Edit,
    InboundEvent,
    Message,
    Sender,
    StatusUpdate,
)
from gateway.providers import (
    Ack,
    Capabilities,
    ChannelProvider,
    CRMProvider,
    InstanceContext,
    Landing,
    NotLanded,
    Outcome,
    Outgoing,
    Provider,
    Sent,
    StatusNotice,
    WebhookRequest,
    WebhookResult,
)


class _JsonProvider(Provider):
    """The shared behaviour of both test providers."""

    required_settings: ClassVar[Mapping[str, str]] = {
        "base_url": "the URL of the service the instance sends to",
        "token": "the bearer token webhooks must carry",
    }
    optional_settings: ClassVar[Mapping[str, Any]] = {
        "max_batch": 1,
        "idempotent": True,
        "finds_sent": False,
        "settle_seconds": 0.0,
    }
    secret_settings: ClassVar[frozenset[str]] = frozenset({"token"})

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        self.capabilities = replace(
            type(self).capabilities,
            max_batch=int(self.config["max_batch"]),
            idempotent_sends=bool(self.config["idempotent"]),
            finds_sent=bool(self.config["finds_sent"]),
            settle_seconds=float(self.config["settle_seconds"]),
        )
        self.base_url = str(self.config["base_url"]).rstrip("/")

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        expected = f"Bearer {self.config['token']}".encode()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("missing or wrong bearer token")
        if request.method != "POST":
            raise BadRequest("webhooks are POSTed", status=405)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return WebhookResult(events=_parse(body))

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        items = [_outgoing_item(item) for item in batch]
        data = await self._post("/send", items, ambiguous_after_send=True)
        outcomes: list[Outcome] = []
        for result in data["results"]:
            if "id" in result:
                outcomes.append(Sent(native_id=str(result["id"])))
            else:
                error = result.get("error", {})
                outcomes.append(
                    PermanentError(error.get("text", "refused"), code=error.get("code"))
                )
        return outcomes

    async def find_sent(self, batch: Sequence[Outgoing]) -> Sequence[Landing]:
        keys = [_outgoing_item(item)["key"] for item in batch]
        try:
            response = await self.context.http.post(self.base_url + "/find", json={"keys": keys})
        except httpx.TransportError as exc:
            raise TemporaryError(f"{type(exc).__name__} asking {self.base_url}") from exc
        if response.status_code != 200:
            raise TemporaryError(f"HTTP {response.status_code}", code=str(response.status_code))
        answers: list[Landing] = []
        for result in response.json()["results"]:
            answers.append(NotLanded() if result.get("missing") else Sent(str(result["id"])))
        return answers

    async def acknowledge(self, acks: Sequence[Ack]) -> Sequence[Outcome]:
        items = [
            {
                "message_id": ack.message.native_id,
                "conversation": ack.message.conversation_id,
                "delivered_id": ack.delivered_id,
                "error": None
                if ack.error is None
                else {"code": ack.error.code, "text": ack.error.text},
            }
            for ack in acks
        ]
        await self._post("/acks", items)
        return [None] * len(acks)

    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        items = [
            {
                "message_id": n.update.native_id,
                "status": n.update.status.name.lower(),
                "conversation": n.update.conversation_id,
            }
            for n in notices
        ]
        await self._post("/statuses", items)
        return [None] * len(notices)

    async def _post(
        self, path: str, items: list[dict[str, Any]], *, ambiguous_after_send: bool = False
    ) -> dict[str, Any]:
        try:
            response = await self.context.http.post(
                self.base_url + path,
                content=orjson.dumps({"items": items}),
                headers={"content-type": "application/json"},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(f"cannot reach {self.base_url}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            # The request may have been processed: only an idempotent destination may resend.
            error = AmbiguousError if ambiguous_after_send else TemporaryError
            raise error(f"{type(exc).__name__} talking to {self.base_url}") from exc
        if response.status_code == 429:
            retry_after = response.headers.get("retry-after")
            raise Throttled(
                "HTTP 429", code="429", retry_after=float(retry_after) if retry_after else 0.01
            )
        if response.status_code >= 500:
            raise TemporaryError(f"HTTP {response.status_code}", code=str(response.status_code))
        if response.status_code >= 400:
            # The service's own words: the operator sees them with the dead letter.
            detail = _error_text(response)
            text = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
            raise PermanentError(text, code=str(response.status_code))
        result: dict[str, Any] = response.json()
        return result


class RecordingChannel(_JsonProvider, ChannelProvider):
    """A test channel: customers' messages in by webhook, operators' replies out by HTTP."""

    name: ClassVar[str] = "test-channel"
    description: ClassVar[str] = "JSON test channel (gateway.testing)"
    capabilities = Capabilities(edits=True, deletes=True)


class RecordingCRM(_JsonProvider, CRMProvider):
    """A test CRM that wants delivery acks and statuses, like Bitrix24 Open Lines does."""

    name: ClassVar[str] = "test-crm"
    description: ClassVar[str] = "JSON test CRM (gateway.testing)"
    capabilities = Capabilities(
        edits=True,
        deletes=True,
        groups=True,
        read_receipts=True,
        wants_acks=True,
        wants_statuses=True,
    )


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        error = error.get("text") or error.get("message")
    return str(error) if error else ""


def _outgoing_item(item: Outgoing) -> dict[str, Any]:
    event = item.event
    data: dict[str, Any] = {
        # The key survives retries and crashes, which is what makes resending safe here.
        "key": f"{item.route.name}:{item.source}:{event.kind}:{event.native_id}",
        "kind": event.kind,
        "conversation": event.conversation_id,
        "target": item.target_native_id,
    }
    if isinstance(event, Message):
        data.update(
            text=event.text,
            sender=event.sender.name or event.sender.id,
            quote=item.quoted_target_id,
            quoted_text=event.quoted_text,
            attachments=[{"kind": a.kind, "url": a.url} for a in event.attachments],
            note=event.is_note,
            from_me=event.from_me,
        )
    elif isinstance(event, Edit):
        data["text"] = event.text
    return data


def _require(entry: Any, fields: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} must be an object", status=422)
    for name in fields:
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            raise BadRequest(f"{where}.{name} must be a non-empty string", status=422)
    return entry


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise BadRequest(f"{key} must be a list", status=422)
    return value


def _parse(body: dict[str, Any]) -> list[InboundEvent]:
    """Validate everything before returning anything: a bad item refuses the whole body."""
    events: list[InboundEvent] = []
    for i, raw in enumerate(_list(body, "messages")):
        entry = _require(raw, ("id", "chat"), f"messages[{i}]")
        text = entry.get("text", "")
        if not isinstance(text, str):
            raise BadRequest(f"messages[{i}].text must be a string", status=422)
        attachments = []
        for j, att in enumerate(entry.get("attachments") or []):
            att = _require(att, ("kind", "url"), f"messages[{i}].attachments[{j}]")
            attachments.append(Attachment(kind=att["kind"], url=att["url"]))
        message = Message(
            conversation_id=entry["chat"],
            native_id=entry["id"],
            sender=Sender(id=str(entry.get("from", entry["chat"])), name=entry.get("name")),
            text=text,
            attachments=tuple(attachments),
            quoted_native_id=entry.get("quote"),
            forwarded=bool(entry.get("forwarded")),
        )
        events.append(InboundEvent(f"msg:{entry['id']}", message))
    for i, raw in enumerate(_list(body, "edits")):
        entry = _require(raw, ("id", "chat", "text"), f"edits[{i}]")
        key = f"edit:{entry['id']}:{entry.get('version', entry['text'])}"
        events.append(InboundEvent(key, Edit(entry["chat"], entry["id"], entry["text"])))
    for i, raw in enumerate(_list(body, "deletes")):
        entry = _require(raw, ("id", "chat"), f"deletes[{i}]")
        events.append(InboundEvent(f"delete:{entry['id']}", Delete(entry["chat"], entry["id"])))
    for i, raw in enumerate(_list(body, "statuses")):
        entry = _require(raw, ("id", "status"), f"statuses[{i}]")
        try:
            status = DeliveryStatus[entry["status"].upper()]
        except KeyError:
            raise BadRequest(
                f"statuses[{i}].status must be one of sent, delivered, read, failed", status=422
            ) from None
        update = StatusUpdate(
            native_id=entry["id"], status=status, conversation_id=entry.get("chat")
        )
        events.append(InboundEvent(f"status:{entry['id']}:{entry['status']}", update))
    return events


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(RecordingChannel)
    register(RecordingCRM)
