"""What GREEN-API shows of sent messages: the outgoing journal and the send queue.

* `lastOutgoingMessages?minutes=N` (GET; default 1440): the account's outgoing messages of
  the last N minutes, newest first, each `{type: "outgoing", idMessage, timestamp,
  statusMessage, sendByApi, typeMessage, chatId, ...}` with the content flattened in as
  the journals show it (`textMessage`; `extendedTextMessage`; `downloadUrl`, `caption`,
  `fileName`, `mimeType` of a file; `location`; `contact`; `quotedMessage`). GREEN says a
  message may take up to 2 minutes to appear there: `FakeGreenApi.journal_delay` models
  that lag (seconds after the message left the queue).
* `showMessagesQueue` (GET): messages accepted but not sent yet (the instance is not
  authorized, or they wait their turn), first added first, each
  `{messageID, type, body: {chatId, message, ...}}` (a file: `urlFile`, `fileName`,
  `caption`; a file upload is listed as `sendFileByUrl`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import GreenSent

if TYPE_CHECKING:
    from .core import FakeGreenApi

#: `showMessagesQueue` lists at most this many messages.
QUEUE_LISTED = 500
_QUEUE_TYPES = {"sendFileByUpload": "sendFileByUrl"}
_BODY_KEYS = ("message", "urlFile", "fileName", "caption", "quotedMessageId", "linkPreview")


def outgoing_journal(fake: FakeGreenApi, minutes: int) -> list[dict[str, Any]]:
    now = fake.clock()
    shown: list[tuple[float, dict[str, Any]]] = []
    for sent in (*fake.sent, *fake.phone_sent):
        went = sent.at if sent.method == "phone" else sent.sent_at
        if went is None or went + fake.journal_delay > now or went < now - minutes * 60:
            continue
        shown.append((went, journal_entry(sent, int(went))))
    return [entry for _, entry in sorted(shown, key=lambda pair: -pair[0])]


def journal_entry(sent: GreenSent, timestamp: int) -> dict[str, Any]:
    data = sent.message_data
    entry: dict[str, Any] = {
        "type": "outgoing",
        "idMessage": sent.id_message,
        "timestamp": timestamp,
        "statusMessage": sent.status,
        "sendByApi": sent.method != "phone",
        "typeMessage": data["typeMessage"],
        "chatId": sent.chat_id,
    }
    if "textMessageData" in data:
        entry["textMessage"] = data["textMessageData"]["textMessage"]
    if "extendedTextMessageData" in data:
        entry["extendedTextMessage"] = dict(data["extendedTextMessageData"])
    if "fileMessageData" in data:
        file = data["fileMessageData"]
        entry.update({k: file[k] for k in ("downloadUrl", "caption", "fileName", "mimeType")})
    for key, name in (("locationMessageData", "location"), ("contactMessageData", "contact")):
        if key in data:
            entry[name] = dict(data[key])
    if "quotedMessage" in data:
        entry["quotedMessage"] = dict(data["quotedMessage"])
    return entry


def send_queue(fake: FakeGreenApi) -> list[dict[str, Any]]:
    listed = []
    for sent in fake.queued()[:QUEUE_LISTED]:
        body = {"chatId": sent.chat_id}
        body.update({k: sent.params[k] for k in _BODY_KEYS if k in sent.params})
        listed.append(
            {
                "messageID": sent.id_message,
                "type": _QUEUE_TYPES.get(sent.method, sent.method),
                "body": body,
            }
        )
    return listed
