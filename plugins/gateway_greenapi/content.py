"""`messageData` of a GREEN-API notification -> normalized message content (spec 2.4).

Every `typeMessage` in the spec is read. What has a native form becomes one (text, files,
location, contacts, quotes, edits, deletions); what has none becomes readable text: polls and
button/list replies as the customer's words, reactions and poll votes as notes on the
message they refer to, anything unknown as a note naming its type, so nothing a customer
sends disappears silently.

File links (`downloadUrl`) are kept as GREEN-API hosts them: they are public storage URLs
valid for weeks, so a CRM that can fetch URLs gets them directly, and one that cannot
re-hosts them on its side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from gateway import Attachment, AttachmentKind, Contact, Location

FILE_KINDS: dict[str, AttachmentKind] = {
    "imageMessage": "image",
    "videoMessage": "video",
    "documentMessage": "document",
    "audioMessage": "audio",
    "stickerMessage": "sticker",
}
_PLACEHOLDERS = {
    "imageMessage": "[image]",
    "videoMessage": "[video]",
    "documentMessage": "[document]",
    "audioMessage": "[audio]",
    "stickerMessage": "[sticker]",
    "locationMessage": "[location]",
    "contactMessage": "[contact]",
    "contactsArrayMessage": "[contacts]",
    "pollMessage": "[poll]",
}
_TEL = re.compile(r"^TEL[^:]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WAID = re.compile(r"waid=(\d+)", re.IGNORECASE)


class Unreadable(ValueError):
    """`messageData` is not shaped like anything GREEN-API sends."""


@dataclass(frozen=True, slots=True)
class Content:
    """What one `messageData` says; `action` tells a message from an edit or a deletion."""

    action: Literal["message", "edit", "delete"] = "message"
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    location: Location | None = None
    contacts: tuple[Contact, ...] = ()
    quoted_id: str | None = None
    quoted_text: str | None = None
    forwarded: bool = False
    is_note: bool = False
    #: The message an edit or deletion refers to.
    target_id: str | None = None


def read_content(data: Any, *, sender: str = "") -> Content:
    """Read one `messageData`; `sender` (who wrote it) picks their choice in a poll vote."""
    if not isinstance(data, Mapping):
        raise Unreadable("messageData must be an object")
    kind = data.get("typeMessage")
    if not isinstance(kind, str) or not kind:
        raise Unreadable("messageData.typeMessage is missing")
    content = _by_type(kind, data, sender)
    if content.action == "message" and content.quoted_id is None and kind != "reactionMessage":
        quoted_id, quoted_text = _quote(data)
        if quoted_id is not None:
            content = _replace(content, quoted_id=quoted_id, quoted_text=quoted_text)
    return _replace(content, forwarded=_forwarded(data))


def _by_type(kind: str, data: Mapping[str, Any], sender: str) -> Content:
    if kind == "textMessage":
        return Content(text=_str(_obj(data, "textMessageData").get("textMessage")))
    if kind in ("extendedTextMessage", "quotedMessage"):
        ext = _obj(data, "extendedTextMessageData")
        return Content(text=_str(ext.get("text")))
    if kind in FILE_KINDS:
        return _file(kind, _obj(data, "fileMessageData"))
    if kind in ("locationMessage", "liveLocationMessage"):
        return _location(data)
    if kind == "contactMessage":
        return Content(contacts=(_contact(_obj(data, "contactMessageData")),))
    if kind == "contactsArrayMessage":
        return _contacts(data)
    if kind == "reactionMessage":
        return _reaction(data)
    if kind == "editedMessage":
        edited = _obj(data, "editedMessageData")
        target = _str(edited.get("stanzaId"))
        if not target:
            raise Unreadable("editedMessageData.stanzaId is missing")
        text = _str(edited.get("textMessage")) or _str(edited.get("caption"))
        return Content(action="edit", text=text, target_id=target)
    if kind == "deletedMessage":
        target = _str(_obj(data, "deletedMessageData").get("stanzaId"))
        if not target:
            raise Unreadable("deletedMessageData.stanzaId is missing")
        return Content(action="delete", target_id=target)
    if kind == "pollMessage":
        return _poll(_obj(data, "pollMessageData"))
    if kind == "pollUpdateMessage":
        return _poll_vote(_obj(data, "pollMessageData"), sender)
    if kind in ("buttonsResponseMessage", "templateButtonsReplyMessage", "listResponseMessage"):
        return _choice(kind, data)
    if kind == "groupInviteMessage":
        invite = _obj(data, "groupInviteMessageData")
        name = _str(invite.get("groupName")) or "a group"
        caption = _str(invite.get("caption"))
        text = f"👥 Invitation to the WhatsApp group «{name}»" + (f"\n{caption}" if caption else "")
        return Content(text=text)
    return Content(text=f"[unsupported WhatsApp message type: {kind}]", is_note=True)


def _file(kind: str, fmd: Mapping[str, Any]) -> Content:
    url = _str(fmd.get("downloadUrl"))
    caption = _str(fmd.get("caption"))
    if not url:
        # GREEN sends an empty link when it could not download the file from WhatsApp.
        missing = f"{_PLACEHOLDERS[kind]} (GREEN-API delivered no file for it)"
        return Content(text=f"{caption}\n{missing}" if caption else missing)
    mime = _str(fmd.get("mimeType")) or None
    attachment_kind = FILE_KINDS[kind]
    if attachment_kind == "audio" and mime is not None and ("opus" in mime or "ogg" in mime):
        # Voice notes are Opus in Ogg; GREEN has no separate type for them.
        attachment_kind = "voice"
    attachment = Attachment(
        kind=attachment_kind,
        url=url,
        mime_type=mime,
        filename=_str(fmd.get("fileName")) or None,
        size=_int(fmd.get("fileSize")),
        caption=caption or None,
    )
    return Content(text=caption, attachments=(attachment,))


def _location(data: Mapping[str, Any]) -> Content:
    lmd = data.get("locationMessageData") or data.get("liveLocationMessageData")
    if not isinstance(lmd, Mapping):
        raise Unreadable("locationMessageData is missing")
    try:
        latitude, longitude = float(lmd["latitude"]), float(lmd["longitude"])
    except (KeyError, TypeError, ValueError):
        raise Unreadable("locationMessageData needs numeric latitude and longitude") from None
    location = Location(
        latitude=latitude,
        longitude=longitude,
        name=_str(lmd.get("nameLocation")) or None,
        address=_str(lmd.get("address")) or None,
    )
    return Content(text=_str(lmd.get("caption")), location=location)


def _contact(entry: Mapping[str, Any]) -> Contact:
    vcard = _str(entry.get("vcard"))
    name = _str(entry.get("displayName")) or _vcard_name(vcard) or "contact"
    return Contact(name=name, phones=vcard_phones(vcard), vcard=vcard or None)


def _contacts(data: Mapping[str, Any]) -> Content:
    # GREEN's own example nests the list as messageData.messageData.contacts.
    holder = data.get("messageData") or data.get("contactsArrayMessageData") or {}
    entries = holder.get("contacts") if isinstance(holder, Mapping) else None
    if not isinstance(entries, list):
        raise Unreadable("contactsArrayMessage has no contacts list")
    return Content(contacts=tuple(_contact(e) for e in entries if isinstance(e, Mapping)))


def vcard_phones(vcard: str) -> tuple[str, ...]:
    """Phone numbers of a vCard: the WhatsApp id when given, else the TEL value as written."""
    phones = []
    for line in _TEL.finditer(vcard):
        whole = line.group(0)
        waid = _WAID.search(whole)
        phone = waid.group(1) if waid else line.group(1).strip()
        if phone and phone not in phones:
            phones.append(phone)
    return tuple(phones)


def _vcard_name(vcard: str) -> str:
    match = re.search(r"^FN:(.*)$", vcard, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _reaction(data: Mapping[str, Any]) -> Content:
    emoji = _str(_obj(data, "extendedTextMessageData").get("text"))
    quoted = data.get("quotedMessage")
    target = _str(quoted.get("stanzaId")) if isinstance(quoted, Mapping) else ""
    text = f"reacted {emoji}" if emoji else "removed a reaction"
    return Content(text=text, quoted_id=target or None, is_note=True)


def _poll(poll: Mapping[str, Any]) -> Content:
    options = [_str(o.get("optionName")) for o in _mappings(poll.get("options"))]
    several = " (several answers allowed)" if poll.get("multipleAnswers") else ""
    lines = [f"📊 Poll: {_str(poll.get('name'))}{several}"]
    lines += [f"{n}. {option}" for n, option in enumerate(options, 1)]
    return Content(text="\n".join(lines))


def _poll_vote(poll: Mapping[str, Any], sender: str) -> Content:
    votes = _mappings(poll.get("votes"))
    mine = [_str(v.get("optionName")) for v in votes if sender in _strings(v.get("optionVoters"))]
    name = _str(poll.get("name"))
    if mine:
        text = f"voted in the poll «{name}»: {', '.join(mine)}"
    elif sender:
        text = f"withdrew their vote in the poll «{name}»"
    else:
        tally = ", ".join(
            f"{_str(v.get('optionName'))}: {len(_strings(v.get('optionVoters')))}" for v in votes
        )
        text = f"poll «{name}» votes: {tally}"
    target = _str(poll.get("stanzaId")) or None
    return Content(text=text, quoted_id=target, is_note=True)


def _choice(kind: str, data: Mapping[str, Any]) -> Content:
    """A tap on a button or a list row: the customer's answer, as text."""
    if kind == "buttonsResponseMessage":
        reply = _obj(data, "buttonsResponseMessage")
        text = _str(reply.get("selectedButtonText")) or _str(reply.get("selectedButtonId"))
    elif kind == "templateButtonsReplyMessage":
        reply = _obj(data, "templateButtonReplyMessage")
        text = _str(reply.get("selectedDisplayText")) or _str(reply.get("selectedId"))
    else:
        reply = _obj(data, "listResponseMessage")
        title, description = _str(reply.get("title")), _str(reply.get("description"))
        text = f"{title}\n{description}" if description else title
        text = text or _str(reply.get("singleSelectReply"))
    return Content(text=text, quoted_id=_str(reply.get("stanzaId")) or None)


def _quote(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A reply's quoted message, in either of GREEN's shapes (spec 2.4).

    New style: the base type plus a `quotedMessage` object. Deprecated style:
    `typeMessage: "quotedMessage"` with the id in `extendedTextMessageData.stanzaId`
    (and, in some examples, the object as well).
    """
    quoted = data.get("quotedMessage")
    ext = data.get("extendedTextMessageData")
    stanza = _str(quoted.get("stanzaId")) if isinstance(quoted, Mapping) else ""
    if not stanza and isinstance(ext, Mapping):
        stanza = _str(ext.get("stanzaId"))
    if not stanza:
        return None, None
    return stanza, _quoted_text(quoted) if isinstance(quoted, Mapping) else None


def _quoted_text(quoted: Mapping[str, Any]) -> str | None:
    for key in ("textMessage", "caption"):
        text = _str(quoted.get(key))
        if text:
            return text
    location = quoted.get("location")
    if isinstance(location, Mapping):
        name = _str(location.get("nameLocation")) or _str(location.get("address"))
        if name:
            return name
    contact = quoted.get("contact")
    if isinstance(contact, Mapping) and _str(contact.get("displayName")):
        return _str(contact.get("displayName"))
    return _PLACEHOLDERS.get(_str(quoted.get("typeMessage")))


def _forwarded(data: Mapping[str, Any]) -> bool:
    for value in data.values():
        if isinstance(value, Mapping) and (
            value.get("isForwarded") is True or (_int(value.get("forwardingScore")) or 0) > 0
        ):
            return True
    return False


def _replace(content: Content, **changes: Any) -> Content:
    return replace(content, **changes)


def _obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise Unreadable(f"{key} is missing for typeMessage {data.get('typeMessage')!r}")
    return value


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
