"""Calls to one GREEN-API instance: `{api_url}/waInstance{id}/{method}/{token}` (spec 2.1).

Every failure comes out as a `DeliveryError` (see `errors.py`); the URL, which holds the
token, never appears in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from gateway import AmbiguousError, TemporaryError
from gateway_greenapi.config import GreenConfig
from gateway_greenapi.errors import response_error, scrub, transport_error

JSON = Any


class GreenClient:
    """The API methods the channel uses, with lower-camel method names as GREEN documents."""

    def __init__(self, http: httpx.AsyncClient, config: GreenConfig) -> None:
        self.http = http
        self.config = config
        self.base = f"{config.api_url}{config.api_prefix}/waInstance{config.id_instance}"

    # sending (spec 2.2) ----------------------------------------------------------------
    async def send(self, method: str, payload: Mapping[str, JSON]) -> str:
        """POST a send method; its `idMessage`. Failures after the request left are ambiguous."""
        body = await self.call("POST", method, json=dict(payload), may_duplicate=True)
        id_message = body.get("idMessage") if isinstance(body, dict) else None
        if not isinstance(id_message, str) or not id_message:
            # A 2xx says GREEN queued something; without its id we cannot tell what.
            raise AmbiguousError(f"GREEN-API answered {method} without an idMessage")
        return id_message

    async def edit(self, chat_id: str, id_message: str, text: str) -> str:
        """`editMessage` of a message the API sent; the id GREEN answers with."""
        payload = {"chatId": chat_id, "idMessage": id_message, "message": text}
        body = await self.call("POST", "editMessage", json=payload)
        answered = body.get("idMessage") if isinstance(body, dict) else None
        return answered if isinstance(answered, str) and answered else id_message

    async def delete(self, chat_id: str, id_message: str) -> None:
        """`deleteMessage` for everyone (GREEN answers 200 with an empty body)."""
        payload = {"chatId": chat_id, "idMessage": id_message}
        await self.call("POST", "deleteMessage", json=payload, empty_ok=True)

    async def read_chat(self, chat_id: str, id_message: str | None = None) -> None:
        payload: dict[str, JSON] = {"chatId": chat_id}
        if id_message:
            payload["idMessage"] = id_message
        await self.call("POST", "readChat", json=payload)

    async def avatar(self, chat_id: str, seconds: float) -> str | None:
        """`getAvatar`: the chat's profile photo URL; None when it has none (not set, hidden,
        no WhatsApp account) or GREEN could not tell (`reason`)."""
        body = await self.call("POST", "getAvatar", json={"chatId": chat_id}, seconds=seconds)
        url = body.get("urlAvatar") if isinstance(body, dict) else None
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None

    # account (spec 2.3) ----------------------------------------------------------------
    async def get_state(self) -> str:
        body = await self.call("GET", "getStateInstance")
        state = body.get("stateInstance") if isinstance(body, dict) else None
        if not isinstance(state, str):
            raise TemporaryError("GREEN-API answered getStateInstance without stateInstance")
        return state

    async def qr(self) -> dict[str, JSON]:
        """`{"type": "qrCode" | "alreadyLogged" | "error", "message": ...}`."""
        body = await self.call("GET", "qr")
        return body if isinstance(body, dict) else {}

    async def wa_settings(self) -> dict[str, JSON]:
        """`getWaSettings`: the account's `phone` (and avatar), empty unless authorized."""
        body = await self.call("GET", "getWaSettings")
        return body if isinstance(body, dict) else {}

    async def get_settings(self) -> dict[str, JSON]:
        body = await self.call("GET", "getSettings")
        return body if isinstance(body, dict) else {}

    async def set_settings(self, settings: Mapping[str, JSON]) -> None:
        body = await self.call("POST", "setSettings", json=dict(settings))
        if not (isinstance(body, dict) and body.get("saveSettings") is True):
            raise TemporaryError("GREEN-API did not confirm setSettings (no saveSettings: true)")

    # receiving by polling (spec 2.5) ---------------------------------------------------
    async def receive_notification(self, wait_seconds: int) -> dict[str, JSON] | None:
        """The head of the notification queue, `{"receiptId", "body"}`, or None when empty."""
        body = await self.call(
            "GET",
            "receiveNotification",
            params={"receiveTimeout": str(wait_seconds)},
            # GREEN holds the request up to `wait_seconds`; give it room to answer.
            seconds=wait_seconds + 15.0,
        )
        return body if isinstance(body, dict) else None

    async def delete_notification(self, receipt_id: int) -> bool:
        body = await self.call("DELETE", "deleteNotification", extra=str(receipt_id))
        return isinstance(body, dict) and body.get("result") is True

    # journals (history) ----------------------------------------------------------------
    async def last_messages(self, direction: str, minutes: int) -> list[JSON]:
        """`lastIncomingMessages` or `lastOutgoingMessages` (`direction` "Incoming" or
        "Outgoing") of the last `minutes`: a list, newest first."""
        method = f"last{direction}Messages"
        body = await self.call("GET", method, params={"minutes": str(minutes)})
        if not isinstance(body, list):
            raise TemporaryError(f"GREEN-API answered {method} with something not a list")
        return body

    # plumbing --------------------------------------------------------------------------
    def url(self, method: str, extra: str = "") -> str:
        tail = f"/{extra}" if extra else ""
        return f"{self.base}/{method}/{self.config.api_token}{tail}"

    async def call(
        self,
        http_method: str,
        method: str,
        *,
        json: Mapping[str, JSON] | None = None,
        params: Mapping[str, str] | None = None,
        extra: str = "",
        seconds: float | None = None,
        may_duplicate: bool = False,
        empty_ok: bool = False,
    ) -> JSON:
        """One API call; the parsed JSON answer (None for `null`); `seconds` overrides the
        client's timeout."""
        secrets = self.config.secrets
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        if params:
            kwargs["params"] = params
        if seconds is not None:
            kwargs["timeout"] = seconds
        try:
            response = await self.http.request(http_method, self.url(method, extra), **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(
                exc, method, may_duplicate=may_duplicate, secrets=secrets
            ) from None
        if not response.is_success:
            raise response_error(response, method, secrets) from None
        if empty_ok and not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            text = scrub(f"GREEN-API answered {method} with a body that is not JSON", secrets)
            raise (AmbiguousError if may_duplicate else TemporaryError)(text) from None
