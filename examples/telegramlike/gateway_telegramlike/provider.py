"""A Telegram-Bot-API-like channel on the gateway's SDK alone: text, photos and documents
both ways, webhooks proven by a secret header and registered at start. The core splits long
texts, links other file kinds and downloads customers' files (`rehost` + `media_download`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx

from gateway import (
    AmbiguousError,
    Attachment,
    BadRequest,
    Capabilities,
    ChannelProvider,
    InboundEvent,
    InstanceContext,
    MediaDownload,
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

WEBHOOK_HEADER = "x-telegram-bot-api-secret-token"
MAX_CAPTION = 1024
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class TelegramLikeChannel(ChannelProvider):
    """One bot: customers write to it, operators answer through it."""

    name: ClassVar[str] = "telegramlike"
    description: ClassVar[str] = "Telegram-Bot-API-like messenger (example plugin)"
    capabilities = Capabilities(
        media_kinds=frozenset({"image", "document", "file"}),
        max_text_length=4096,
        max_file_size=50 * 1024 * 1024,
    )
    required_settings: ClassVar[Mapping[str, str]] = {
        "token": "the bot token the messenger gave you (123456:ABC...)",
        "webhook_secret": "a random string of 16+ letters/digits the webhook must carry",
    }
    optional_settings: ClassVar[Mapping[str, Any]] = {"api_url": "https://api.telegram.org"}
    secret_settings: ClassVar[frozenset[str]] = frozenset({"token", "webhook_secret"})

    def __init__(self, context: InstanceContext) -> None:
        super().__init__(context)
        base, token = str(self.config["api_url"]).rstrip("/"), self.config["token"]
        self.methods = f"{base}/bot{token}"
        self.files = f"{base}/file/bot{token}"
        self.secret = str(self.config["webhook_secret"])

    async def start(self) -> None:
        await self._call(
            "setWebhook",
            {
                "url": self.context.hub.webhook_url(self.instance),
                "secret_token": self.secret,
                "allowed_updates": ["message"],
            },
        )

    async def handle_webhook(self, request: WebhookRequest) -> WebhookResult:
        given = request.headers.get(WEBHOOK_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret.encode()):
            raise Unauthorized("missing or wrong secret token header")
        try:
            update = json.loads(request.body)
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise BadRequest("an update needs an integer update_id", status=422)
        if "message" not in update:
            return WebhookResult()  # other kinds of updates are not asked for
        message = _message(update["message"])
        return WebhookResult(events=[InboundEvent(f"update:{update['update_id']}", message)])

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        return await send_each(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> Outcome:
        event = item.event
        if not isinstance(event, Message):
            raise PermanentError(f"cannot {event.kind} a sent message", code="unsupported")
        chat: dict[str, Any] = {"chat_id": event.conversation_id}
        if item.quoted_target_id:
            chat["reply_parameters"] = {"message_id": int(item.quoted_target_id)}
        text, files = event.text, list(event.attachments)
        first: dict[str, Any] | None = None
        if text and (not files or len(text) > MAX_CAPTION):
            first = await self._call("sendMessage", {**chat, "text": text}, sending=True)
            text, chat = "", {"chat_id": event.conversation_id}
        for attachment in files:
            photo = attachment.kind == "image"
            body = {**chat, "photo" if photo else "document": attachment.url}
            if text or attachment.caption:
                body["caption"] = text or attachment.caption
            result = await self._call("sendPhoto" if photo else "sendDocument", body, sending=True)
            first = first or result
            text, chat = "", {"chat_id": event.conversation_id}
        if first is None:
            raise PermanentError("the message has nothing to send", code="empty")
        return Sent(str(first["message_id"]))

    async def media_download(self, attachment: Attachment) -> MediaDownload:
        # Inbound files carry the messenger's file id; getFile names a path on its file host.
        found = await self._call("getFile", {"file_id": attachment.url})
        return MediaDownload(f"{self.files}/{found['file_path']}")

    async def _call(self, method: str, body: dict[str, Any], *, sending: bool = False) -> Any:
        """The `result` of one Bot API call, or the `DeliveryError` its answer means."""
        try:
            response = await self.context.http.post(f"{self.methods}/{method}", json=body)
        except _NOT_SENT as exc:
            raise TemporaryError(f"cannot reach the Bot API: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            # The request left: the message may have been sent, so only a person may resend.
            error = AmbiguousError if sending else TemporaryError
            raise error(f"no answer from the Bot API to {method}: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code == 200 and isinstance(data, dict) and data.get("ok"):
            return data["result"]
        data = data if isinstance(data, dict) else {}
        text = str(data.get("description") or f"HTTP {response.status_code} from {method}")
        code = str(data.get("error_code") or response.status_code)
        if response.status_code == 429:
            wait = (data.get("parameters") or {}).get("retry_after")
            raise Throttled(text, code=code, retry_after=float(wait) if wait else None)
        if response.status_code >= 500:
            raise TemporaryError(text, code=code)
        raise PermanentError(text, code=code)


def _message(raw: Any) -> Message:
    """A customer's message; raises `BadRequest` for anything malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("chat"), dict):
        raise BadRequest("message.chat must be an object", status=422)
    author: dict[str, Any] = raw["from"] if isinstance(raw.get("from"), dict) else {}
    try:
        chat_id, message_id = int(raw["chat"]["id"]), int(raw["message_id"])
    except (KeyError, TypeError, ValueError):
        raise BadRequest("message needs integer message_id and chat.id", status=422) from None
    name = " ".join(str(author.get(k)) for k in ("first_name", "last_name") if author.get(k))
    attachments: list[Attachment] = []
    if isinstance(raw.get("photo"), list) and raw["photo"]:
        largest = raw["photo"][-1]  # sizes come smallest first
        attachments.append(_file("image", largest, "photo.jpg", "image/jpeg"))
    if isinstance(raw.get("document"), dict):
        document = raw["document"]
        attachments.append(
            _file("document", document, document.get("file_name"), document.get("mime_type"))
        )
    reply = raw.get("reply_to_message")
    return Message(
        conversation_id=str(chat_id),
        native_id=str(message_id),
        sender=Sender(id=str(author.get("id", chat_id)), name=name or None),
        text=str(raw.get("text") or raw.get("caption") or ""),
        attachments=tuple(attachments),
        quoted_native_id=str(reply["message_id"]) if isinstance(reply, dict) else None,
        is_group=raw["chat"].get("type") != "private",
        timestamp=float(raw["date"]) if isinstance(raw.get("date"), int) else None,
    )


def _file(kind: Any, raw: Any, filename: Any, mime: Any) -> Attachment:
    if not isinstance(raw, dict) or not isinstance(raw.get("file_id"), str):
        raise BadRequest("a file needs a file_id", status=422)
    name, size = filename if isinstance(filename, str) else None, raw.get("file_size")
    # Not a URL yet: the core asks `media_download` for one just before delivery.
    file_id, mime_type = raw["file_id"], mime if isinstance(mime, str) else None
    return Attachment(
        kind, file_id, mime_type, name, size if isinstance(size, int) else None, rehost=True
    )
