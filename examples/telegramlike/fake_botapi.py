"""A fake of the Telegram-Bot-API-like service: the calls the example plugin makes, the
updates a customer's messages cause, and its error answers, as the public docs describe."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

WEBHOOK_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass
class FakeBotApi:
    """One bot at `https://{host}`; `http` is how it reaches the webhook it was given."""

    token: str = "123456789:AAFakeBotToken0123456789abcdefghijk"  # noqa: S105 (a fake's)
    host: str = "api.telegram.test"
    http: httpx.AsyncClient | None = None
    webhook: dict[str, Any] = field(default_factory=dict)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def api_url(self) -> str:
        return f"https://{self.host}"

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["POST"]),
                Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
            ]
        )

    # the customer's side -------------------------------------------------------------------
    def customer_writes(self, chat_id: int, text: str = "", **media: Any) -> int:
        """Queue the update for a message from `chat_id`; returns its message_id."""
        message_id = next(self._ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": {"id": chat_id, "is_bot": False, "first_name": "Ivan"},
            "chat": {"id": chat_id, "type": "private", "first_name": "Ivan"},
            "date": 1_700_000_000 + message_id,
        }
        if text:
            message["caption" if media else "text"] = text
        for kind, (name, content) in media.items():
            file_id = f"file-{message_id}-{kind}"
            self.files[file_id] = (f"{kind}s/{name}", content)
            entry = {"file_id": file_id, "file_unique_id": file_id, "file_size": len(content)}
            if kind == "photo":
                message["photo"] = [{**entry, "width": 90, "height": 90}]
            else:
                message["document"] = {**entry, "file_name": name, "mime_type": "application/pdf"}
        self.pending.append({"update_id": 500_000 + message_id, "message": message})
        return message_id

    async def deliver_webhooks(self) -> list[int]:
        """POST every pending update to the webhook, with its secret; the statuses."""
        assert self.http is not None and self.webhook, "no webhook set"
        statuses = []
        while self.pending:
            update = self.pending.pop(0)
            headers = {WEBHOOK_HEADER: self.webhook.get("secret_token", "")}
            response = await self.http.post(self.webhook["url"], json=update, headers=headers)
            statuses.append(response.status_code)
        return statuses

    # the Bot API ----------------------------------------------------------------------------
    async def _method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "Bad Request: can't parse JSON")
        method = request.path_params["method"]
        if method == "setWebhook":
            self.webhook = body
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "getFile":
            found = self.files.get(body.get("file_id", ""))
            if found is None:
                return _error(400, "Bad Request: invalid file_id")
            return JSONResponse({"ok": True, "result": {**body, "file_path": found[0]}})
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            if not str(body.get("chat_id", "")).lstrip("-").isdigit():
                return _error(400, "Bad Request: chat not found")
            if len(body.get("text", "")) > 4096:
                return _error(400, "Bad Request: message is too long")
            self.sent.append((method, body))
            message = {"message_id": next(self._ids), "chat": {"id": int(body["chat_id"])}}
            return JSONResponse({"ok": True, "result": message})
        return _error(404, "Not Found")

    async def _file(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        for path, content in self.files.values():
            if path == request.path_params["path"]:
                return Response(content, media_type="application/octet-stream")
        return _error(404, "Not Found")


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error_code": status, "description": description}, status)
