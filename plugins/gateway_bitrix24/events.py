"""Bitrix24 events as normalized gateway events.

An event POST carries `event` (upper-case name), `data[...]`, `ts` and `auth[...]` (with the
`application_token` that proves it comes from the portal). Connector events for our
connector become one `InboundEvent` per `MESSAGES` item, addressed to the route target
`{member_id}/{line}` and keyed `bitrix24:{member_id}:{im message id}`: Bitrix24 sends each
event once and never retries, but a handler bound twice would get it twice.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urljoin, urlsplit, urlunsplit

from gateway import Attachment, AttachmentKind, Delete, Edit, InboundEvent, Message, Sender

from .formatting import bbcode_to_whatsapp, split_signature
from .forms import FormError, as_dict, as_int, as_items, as_str, lower_keys
from .quotes import split_quote
from .records import PortalRecord, target_of

log = logging.getLogger("gateway.bitrix24")

MESSAGE_ADD = "ONIMCONNECTORMESSAGEADD"
MESSAGE_UPDATE = "ONIMCONNECTORMESSAGEUPDATE"
MESSAGE_DELETE = "ONIMCONNECTORMESSAGEDELETE"
DIALOG_START = "ONIMCONNECTORDIALOGSTART"
DIALOG_FINISH = "ONIMCONNECTORDIALOGFINISH"
STATUS_DELETE = "ONIMCONNECTORSTATUSDELETE"
LINE_DELETE = "ONIMCONNECTORLINEDELETE"
APP_INSTALL = "ONAPPINSTALL"
APP_UNINSTALL = "ONAPPUNINSTALL"
APP_UPDATE = "ONAPPUPDATE"


@dataclass(frozen=True, slots=True)
class PortalEvent:
    name: str
    data: Any
    auth: dict[str, Any]
    ts: float | None = None

    @property
    def member_id(self) -> str | None:
        return as_str(self.auth.get("member_id"))

    @property
    def application_token(self) -> str | None:
        return as_str(self.auth.get("application_token"))


def read_event(form: dict[str, Any]) -> PortalEvent:
    name = as_str(form.get("event"))
    if not name:
        raise FormError("the body has no `event` field")
    ts = as_int(form.get("ts"))
    return PortalEvent(
        name=name.upper(),
        data=form.get("data"),
        auth=lower_keys(as_dict(form.get("auth"))),
        ts=float(ts) if ts is not None else None,
    )


def connector_and_line(event: PortalEvent) -> tuple[str, int] | None:
    """`data[CONNECTOR]`/`data[LINE]` (lower-case keys in STATUSDELETE)."""
    data = {str(k).upper(): v for k, v in as_dict(event.data).items()}
    connector = as_str(data.get("CONNECTOR"))
    line = as_int(data.get("LINE"))
    if connector is None or line is None:
        return None
    return connector.lower(), line


def deleted_line(event: PortalEvent) -> int | None:
    """ONIMCONNECTORLINEDELETE carries the line id as scalar `data`."""
    line = as_int(event.data)
    if line is None:
        line = as_int(as_dict(event.data).get("LINE") or as_dict(event.data).get("line"))
    return line


@dataclass(slots=True)
class MessageParser:
    """Turns one portal's connector events into inbound events."""

    record: PortalRecord
    line: int
    connector: str
    strip_operator_name: bool
    #: Whether Bitrix24 prefixes operator texts (NEED_SIGNATURE); only then is it parsed.
    signature: bool = True
    skipped: list[str] = field(default_factory=list)

    def parse(self, event: PortalEvent) -> list[InboundEvent]:
        data = {str(k).upper(): v for k, v in as_dict(event.data).items()}
        parsed: list[InboundEvent] = []
        for index, raw in enumerate(as_items(data.get("MESSAGES"))):
            item = lower_keys(as_dict(raw))
            try:
                built = self._item(event, item)
            except ValueError as exc:
                self.skipped.append(f"MESSAGES[{index}]: {exc}")
                continue
            if built is not None:
                parsed.append(built)
        return parsed

    def _item(self, event: PortalEvent, item: dict[str, Any]) -> InboundEvent | None:
        im = lower_keys(as_dict(item.get("im")))
        message_id = as_int(im.get("message_id"))
        chat_id = as_str(as_dict(item.get("chat")).get("id"))
        if message_id is None or not chat_id:
            raise ValueError("no im.message_id or chat.id")
        message = lower_keys(as_dict(item.get("message")))
        user_id = as_int(message.get("user_id"))
        extra = {
            "b24": {
                "member_id": self.record.member_id,
                "line": self.line,
                "connector": self.connector,
                "im": {"chat_id": as_int(im.get("chat_id")), "message_id": message_id},
                "chat_id": chat_id,
                "user_id": user_id,
            }
        }
        member = self.record.member_id
        target = target_of(member, self.line)
        key = f"bitrix24:{member}:{message_id}"
        if event.name == MESSAGE_DELETE:
            return InboundEvent(
                f"{key}:delete", Delete(chat_id, str(message_id), extra=extra), target
            )
        operator, text, quote = self._text(as_str(message.get("text")) or "")
        if event.name == MESSAGE_UPDATE:
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            edit = Edit(chat_id, str(message_id), text, extra=extra)
            return InboundEvent(f"{key}:edit:{digest}", edit, target)
        attachments = tuple(self._files(message.get("files")))
        if not text and not attachments and not quote:
            raise ValueError("neither text nor files")
        sender = Sender(id=f"bitrix24:{user_id or 0}", name=operator)
        built = Message(
            conversation_id=chat_id,
            native_id=str(message_id),
            sender=sender,
            text=text,
            attachments=attachments,
            quoted_text=quote,
            timestamp=event.ts,
            extra=extra,
        )
        return InboundEvent(key, built, target)

    def _text(self, raw: str) -> tuple[str | None, str, str | None]:
        """(operator, text, quoted text): the signature and a quote block taken out."""
        operator, rest = split_signature(raw) if self.signature else (None, raw)
        quote, rest = split_quote(rest)
        if operator is not None and not self.strip_operator_name:
            rest = f"[b]{operator}:[/b]\n{rest}" if rest.strip() else f"[b]{operator}:[/b]"
        return operator, bbcode_to_whatsapp(rest).strip(), quote.text if quote else None

    def _files(self, raw: Any) -> list[Attachment]:
        found = []
        for entry in as_items(raw):
            info = lower_keys(as_dict(entry))
            link = next(
                (v for k in ("downloadlink", "link", "url") if (v := as_str(info.get(k)))), None
            )
            url = _absolute(self.record.base_url, link) if link else None
            if url is None:
                continue
            name = as_str(info.get("name"))
            mime = as_str(info.get("mime")) or (mimetypes.guess_type(name)[0] if name else None)
            found.append(
                Attachment(
                    kind=_kind(as_str(info.get("type")), mime),
                    url=url,
                    mime_type=mime,
                    filename=name,
                    size=as_int(info.get("size")),
                )
            )
        return found


def _absolute(base: str, link: str) -> str | None:
    """An absolute http(s) URL without the `#img.jpg` fragment image links carry."""
    parts = urlsplit(urljoin(base + "/", link.strip()))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def _kind(file_type: str | None, mime: str | None) -> AttachmentKind:
    major = (mime or "").split("/", 1)[0]
    if file_type == "image" or major == "image":
        return "image"
    if major in ("video", "audio"):
        return cast(AttachmentKind, major)
    return "document"
