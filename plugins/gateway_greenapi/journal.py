"""GREEN-API's journals as events: `lastIncomingMessages`, `lastOutgoingMessages`.

A journal item is flat (`type`, `idMessage`, `timestamp`, `typeMessage`, `chatId`,
`senderId`, `senderName`, `senderContactName`, then the content's own fields such as
`textMessage`, `extendedTextMessage`, `downloadUrl`, `caption`, `fileName`, `mimeType`,
`location`, `contact`, `quotedMessage`; outgoing ones add `sendByApi`). Each item is turned
back into the notification GREEN would have sent for it and read by the same parser, so it
gets the same dedupe key (`greenapi:{idInstance}:{chatId}:{idMessage}:{typeWebhook}`): a
message that arrives both by webhook and from a journal has one effect. Items GREEN's
journals list newest first come out oldest first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import InboundEvent
from gateway_greenapi.content import FILE_KINDS
from gateway_greenapi.notifications import Options, Unparsable, parse_notification

log = logging.getLogger("gateway_greenapi")

_ENVELOPE = frozenset(
    {"type", "idMessage", "timestamp", "typeMessage", "chatId", "senderId", "senderName"}
    | {"senderContactName", "chatName", "statusMessage", "sendByApi", "isForwarded"}
    | {"forwardingScore", "quotedMessage", "textMessage", "extendedTextMessage"}
    | {"downloadUrl", "caption", "fileName", "jpegThumbnail", "mimeType", "location", "contact"}
)
_FILE_FIELDS = ("downloadUrl", "caption", "fileName", "jpegThumbnail", "mimeType")


def minutes_since(since: float, now: float) -> int:
    """The journals' `minutes` reaching back to `since` (at least 1)."""
    return max(1, math.ceil((now - since) / 60.0))


def journal_events(
    journals: Sequence[Sequence[Any]], options: Options, *, since: float | None = None
) -> list[InboundEvent]:
    """The items of journals (each listed newest first, as GREEN lists them) as events,
    oldest first; items before `since` and items that are no message the gateway takes are
    left out. Equal timestamps keep each journal's order, the first journal's items first."""
    oldest_first = [item for journal in journals for item in reversed(journal)]
    dated: list[tuple[float, InboundEvent]] = []
    for item in oldest_first:
        if not isinstance(item, Mapping):
            continue
        stamp = item.get("timestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool):
            continue
        if since is not None and stamp < since:
            continue
        try:
            events = parse_notification(notification_of(item, options.id_instance), options)
        except Unparsable as exc:
            log.warning(
                "GREEN-API instance %s: journal item %s skipped: %s",
                options.id_instance,
                item.get("idMessage"),
                exc,
            )
            continue
        dated.extend((float(stamp), event) for event in events)
    dated.sort(key=lambda entry: entry[0])  # stable: ties keep the order above
    return [event for _, event in dated]


def notification_of(item: Mapping[str, Any], id_instance: str) -> dict[str, Any]:
    """The notification GREEN sends for the message a journal item describes."""
    outgoing = item.get("type") == "outgoing"
    if not outgoing:
        kind = "incomingMessageReceived"
    elif item.get("sendByApi") is True:
        kind = "outgoingAPIMessageReceived"
    else:
        kind = "outgoingMessageReceived"
    chat_id = item.get("chatId")
    sender = {
        "chatId": chat_id,
        "sender": item.get("senderId") or chat_id,
        # An outgoing item names the business as its sender, never the customer's chat.
        "chatName": "" if outgoing else str(item.get("chatName") or ""),
        "senderName": "" if outgoing else str(item.get("senderName") or ""),
        "senderContactName": "" if outgoing else str(item.get("senderContactName") or ""),
    }
    return {
        "typeWebhook": kind,
        "instanceData": {"idInstance": int(id_instance), "typeInstance": "whatsapp"},
        "timestamp": item.get("timestamp"),
        "idMessage": item.get("idMessage"),
        "senderData": sender,
        "messageData": message_data_of(item),
    }


def message_data_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """A journal item's content as the `messageData` of a notification."""
    kind = str(item.get("typeMessage") or "")
    forwarded = {
        "isForwarded": item.get("isForwarded") is True,
        "forwardingScore": item.get("forwardingScore") or 0,
    }
    data: dict[str, Any] = {"typeMessage": kind}
    if kind == "textMessage":
        data["textMessageData"] = {"textMessage": str(item.get("textMessage") or "")}
    elif kind in ("extendedTextMessage", "quotedMessage"):
        ext = item.get("extendedTextMessage")
        ext = dict(ext) if isinstance(ext, Mapping) else {}
        ext.setdefault("text", str(item.get("textMessage") or ""))
        data["extendedTextMessageData"] = {**forwarded, **ext}
    elif kind in FILE_KINDS:
        data["fileMessageData"] = {
            **forwarded,
            **{key: item.get(key) or "" for key in _FILE_FIELDS},
        }
    elif kind in ("locationMessage", "liveLocationMessage"):
        data["locationMessageData"] = {**forwarded, **_mapping(item.get("location"))}
    elif kind == "contactMessage":
        data["contactMessageData"] = {**forwarded, **_mapping(item.get("contact"))}
    if isinstance(item.get("quotedMessage"), Mapping):
        data["quotedMessage"] = item["quotedMessage"]
    for key, value in item.items():
        # Other kinds (polls, reactions, edits, contact lists...) nest as their webhooks do.
        if key not in _ENVELOPE and key not in data:
            data[key] = value
    return data


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
