"""An operator's quote, from the open line to a WhatsApp quoted reply.

What Bitrix24 sends: the connector event (`ONIMCONNECTORMESSAGEADD`) carries the message's
text, files, attachments and a few whitelisted params (`IMOL_*`, `IS_*`, `CLASS`, `url`):
imopenlines' `Connector::onMessageSend`. The messenger's *Quote* action writes the quoted
message into the text itself, between two lines of 54 hyphens under its author and time::

    ------------------------------------------------------
    Ivan Petrov [08.04.2026 13:06:49]
    Do you have it in size 42?
    ------------------------------------------------------
    Yes, we do.

(the same shape im's own parsers read: `-{54}\\n(name)\\s\\[(date)\\]…\\n(text)-{54}`). The
newer *Reply* action stores `REPLY_ID` in the message's params, which is not among those
passed to a connector, so such a reply reaches the gateway as plain text and is sent so.

No id travels with a quote. The gateway finds the quoted message by reading the chat back
(`imopenlines.session.history.get` with the event's `im.chat_id` and the session the gateway
last saw the chat in, or else the chat's latest session): the newest earlier message whose
text is the quoted text. A customer's message there carries the WhatsApp id the gateway gave
it (`CONNECTOR_MID`), an operator's is known by its own id; the core translates either
through the id map into the WhatsApp id of the quoted message (Chat API `quotedMsgId`,
GREEN-API `quotedMessageId`, Cloud API `context.message_id`). When the quoted message cannot
be found (older session, the portal cannot be read now), the quote is kept as WhatsApp quote
lines (`> …`) above the reply, so the customer still sees what is answered.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway import DeliveryError, InboundEvent, Message

from .formatting import bbcode_to_whatsapp, split_signature
from .forms import as_dict, as_int, as_items, as_str
from .landed import Landings
from .rest import RestClient

log = logging.getLogger("gateway.bitrix24")

HISTORY = "imopenlines.session.history.get"
_RULE = re.compile(r"^-{20,}[ \t]*$")
_TITLE = re.compile(r"^(?P<author>.+?)\s*\[(?P<date>[^\]\n]+)\].*$")
_TAGS = re.compile(r"\[/?[a-z]+(?:=[^\]]*)?\]", re.I)
_BR = re.compile(r"\[br\]", re.I)


@dataclass(frozen=True, slots=True)
class Quote:
    """A quote block of an operator's text: who and when (as the title line says), what."""

    text: str
    author: str | None = None
    date: str | None = None


def split_quote(text: str) -> tuple[Quote | None, str]:
    """(the first quote block, the text without it); (None, text) when there is none."""
    lines = _BR.sub("\n", text).split("\n")
    opening = next((n for n, line in enumerate(lines) if _RULE.match(line.strip())), None)
    if opening is None:
        return None, text
    closing = next(
        (n for n in range(opening + 1, len(lines)) if _RULE.match(lines[n].strip())), None
    )
    if closing is None:
        return None, text
    inner = lines[opening + 1 : closing]
    author = date = None
    if inner and (title := _TITLE.match(inner[0].strip())) is not None:
        author, date = title.group("author").strip() or None, title.group("date").strip()
        inner = inner[1:]
    quoted = "\n".join(inner).strip("\n")
    if not quoted.strip():
        return None, text
    rest = "\n".join(lines[:opening] + lines[closing + 1 :]).strip("\n")
    return Quote(quoted, author, date), rest


def comparable(text: str) -> str:
    """A text as a reader compares it: without a signature or quotes of its own, tags,
    quote marks, invisible characters or case."""
    _, text = split_signature(_BR.sub("\n", text))
    for _ in range(5):
        quote, text = split_quote(text)
        if quote is None:
            break
    text = _TAGS.sub("", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = "\n".join(line[2:] if line.startswith(">>") else line for line in text.split("\n"))
    return " ".join(text.split()).casefold()


class QuoteFinder:
    """Gives operator messages with a quote the id of the quoted message."""

    def __init__(self, rest: RestClient, landings: Landings) -> None:
        self.rest = rest
        self.landings = landings

    async def resolve(
        self, member_id: str, line: int, parsed: Sequence[InboundEvent]
    ) -> list[InboundEvent]:
        resolved: list[InboundEvent] = []
        for item in parsed:
            event = item.event
            if isinstance(event, Message) and event.quoted_text and not event.quoted_native_id:
                event = await self._one(member_id, line, event)
                item = dataclasses.replace(item, event=event)
            resolved.append(item)
        return resolved

    async def _one(self, member_id: str, line: int, message: Message) -> Message:
        info = as_dict(message.extra.get("b24"))
        im = as_dict(info.get("im"))
        chat, own = as_int(im.get("chat_id")), as_int(im.get("message_id"))
        quoted = message.quoted_text or ""
        found: str | None = None
        if chat:
            params: dict[str, Any] = {"CHAT_ID": chat}
            # By session it needs no chat membership (see landed.py); else the latest one.
            known = await self.landings.chat_ids(member_id, line, message.conversation_id)
            if known is not None and known.session_id and known.session_id.isdigit():
                params["SESSION_ID"] = int(known.session_id)
            try:
                reply = await self.rest.call(member_id, HISTORY, params)
            except DeliveryError as exc:
                log.info("the quoted message of %s is not looked up: %s", own, exc)
            else:
                found = find_quoted(reply.result, quoted, before=own)
        shown = bbcode_to_whatsapp(quoted).strip()
        if found is not None and message.text:
            return dataclasses.replace(message, quoted_native_id=found, quoted_text=shown)
        # Not found (or nothing but the quote): the customer sees it as quote lines.
        lines = "\n".join(f"> {line}" for line in shown.split("\n"))
        signed = f"*{message.sender.name}:*" if message.sender.name else None
        head, body = "", message.text
        if signed and (body == signed or body.startswith(signed + "\n")):
            head, body = signed + "\n", body[len(signed) + 1 :]  # the name stays first
        text = f"{head}{lines}\n{body}" if body else f"{head}{lines}"
        return dataclasses.replace(message, text=text, quoted_text=None)


def find_quoted(history: Any, quoted: str, *, before: int | None) -> str | None:
    """The id to quote from a history answer: the `CONNECTOR_MID` of the newest customer
    message (before `before`) whose text is `quoted`, or an operator message's own id."""
    body = as_dict(history)
    users = as_dict(body.get("users"))
    wanted = comparable(quoted)
    if not wanted:
        return None
    best: tuple[int, str] | None = None
    for raw in as_items(body.get("message")):
        entry = as_dict(raw)
        number = as_int(entry.get("id"))
        if number is None or (before is not None and number >= before):
            continue
        text = comparable(as_str(entry.get("text")) or as_str(entry.get("textlegacy")) or "")
        if text != wanted and not (len(wanted) >= 20 and text.startswith(wanted)):
            continue
        author = as_dict(users.get(str(as_str(entry.get("senderid")) or "")))
        mids = _connector_mids(as_dict(entry.get("params")))
        if author.get("connector") in (True, "Y", "y", 1, "1") and mids:
            candidate = mids[0]
        elif author.get("connector") in (True, "Y", "y", 1, "1"):
            continue  # a customer message the gateway did not deliver: no WhatsApp id
        else:
            candidate = str(number)
        if best is None or number > best[0]:
            best = (number, candidate)
    return best[1] if best is not None else None


def _connector_mids(params: dict[str, Any]) -> list[str]:
    for key, value in params.items():
        if str(key).replace("_", "").lower() == "connectormid":
            return [m for m in (as_str(v) for v in as_items(value) or [value]) if m]
    return []
