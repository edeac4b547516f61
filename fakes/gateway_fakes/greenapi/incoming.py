"""GREEN-API's incoming journal: `lastIncomingMessages`, and with the outgoing journal
(`journals.py`) `getChatHistory` (GREEN's Journals pages).

The journal keeps every incoming message notification the instance produced, so only
while `incomingWebhook` was on (GREEN: messages from before the setting are not in the
journal), whether or not the gateway ever received it. Items are flat, not webhook
envelopes: `type: "incoming"`, `idMessage`, `timestamp`, `typeMessage`, `chatId`,
`senderId`, `senderName`, `senderContactName`, then the content's own fields
(`textMessage`, `extendedTextMessage`, `downloadUrl`, `caption`, `fileName`, `mimeType`,
`location`, `contact`, `quotedMessage`, `isForwarded`, `forwardingScore`). Answers list
the newest first; a message shows `FakeGreenApi.journal_delay` seconds after it came.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: GREEN: "The method returns the last 10000 messages."
MAX_JOURNAL = 10_000
#: GREEN: `minutes` defaults to 1440 (24 hours).
DEFAULT_MINUTES = 1440
#: GREEN: `count` of getChatHistory defaults to 100.
DEFAULT_COUNT = 100

_FILE_KEYS = ("downloadUrl", "caption", "fileName", "jpegThumbnail", "mimeType")
_RENAMED = {"locationMessageData": "location", "contactMessageData": "contact"}


def flatten(message_data: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook's `messageData` as a journal item's content fields."""
    out: dict[str, Any] = {"typeMessage": str(message_data.get("typeMessage"))}
    for key, value in message_data.items():
        if key == "typeMessage":
            continue
        if key == "textMessageData":
            out["textMessage"] = value.get("textMessage", "")
        elif key == "extendedTextMessageData":
            out["textMessage"] = value.get("text", "")
            out["extendedTextMessage"] = dict(value)
        elif key == "fileMessageData":
            out.update({name: value.get(name, "") for name in _FILE_KEYS})
        else:
            # location and contact as the journals name them; the rest as webhooks nest it
            out[_RENAMED.get(key, key)] = value
        if isinstance(value, Mapping) and "isForwarded" in value:
            out["isForwarded"] = bool(value["isForwarded"])
            out["forwardingScore"] = int(value.get("forwardingScore") or 0)
    return out


def item_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The journal item of an `incomingMessageReceived` notification; None for others."""
    if body.get("typeWebhook") != "incomingMessageReceived":
        return None
    sender = body["senderData"]
    return {
        "type": "incoming",
        "idMessage": body["idMessage"],
        "timestamp": body["timestamp"],
        "chatId": sender["chatId"],
        "senderId": sender["sender"],
        "senderName": sender.get("senderName", ""),
        "senderContactName": sender.get("senderContactName", ""),
        **flatten(body["messageData"]),
    }


class IncomingJournal:
    """Every incoming message notification the instance made, oldest first."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def record(self, body: Mapping[str, Any]) -> None:
        item = item_of(body)
        if item is not None:
            self.items.append(item)

    def shown(self, now: float, delay: float) -> list[dict[str, Any]]:
        """What the journal shows at `now`: the last `MAX_JOURNAL`, oldest first."""
        return [i for i in self.items if i["timestamp"] + delay <= now][-MAX_JOURNAL:]

    def last(self, *, minutes: int, now: float, delay: float) -> list[dict[str, Any]]:
        """`lastIncomingMessages`: newest first."""
        since = now - minutes * 60
        return [dict(i) for i in reversed(self.shown(now, delay)) if i["timestamp"] >= since]
