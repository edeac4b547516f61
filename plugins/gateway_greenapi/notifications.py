"""A GREEN-API notification (webhook body or `receiveNotification().body`) -> events.

Dedupe keys follow spec section 0: `greenapi:{idInstance}:{chatId}:{idMessage}:{typeWebhook}`
for messages (GREEN's ids are unique only within a chat) and
`greenapi:{idInstance}:{idMessage}:{status}` for delivery statuses.

What is dropped on purpose (answered 200, stored nothing):
* `outgoingAPIMessageReceived`: the echo of a send; the gateway's own sends never loop,
  and an echo cannot be told from another API client's send before the send's id is
  committed, so none is mirrored.
* `outgoingMessageReceived` (typed on the phone) unless `mirror_phone_messages`; mirrored
  ones become `from_me` notes.
* statuses with `sendByApi: false` (messages typed on the phone never went through us);
* chats that are no conversations (`status@broadcast`) and groups unless `groups`;
* `incomingBlock`, `incomingMessageStatus`, `deviceInfo`, `statusInstanceChanged`,
  `quotaExceeded` (logged: sends then fail with a 466 the operator sees) and unknown types.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import Delete, DeliveryStatus, Edit, Event, InboundEvent, Message, Sender, StatusUpdate
from gateway_greenapi.chats import is_group, is_ignored_chat, phone_of
from gateway_greenapi.content import Content, Unreadable, read_content
from gateway_greenapi.state import account_state

log = logging.getLogger("gateway_greenapi")

MESSAGE_TYPES = ("incomingMessageReceived", "outgoingMessageReceived", "outgoingAPIMessageReceived")
STATUSES: dict[str, tuple[DeliveryStatus, str | None]] = {
    "sent": (DeliveryStatus.SENT, None),
    "delivered": (DeliveryStatus.DELIVERED, None),
    "read": (DeliveryStatus.READ, None),
    "failed": (DeliveryStatus.FAILED, "WhatsApp could not deliver the message"),
    "noAccount": (DeliveryStatus.FAILED, "the recipient has no WhatsApp account"),
    "notInGroup": (DeliveryStatus.FAILED, "the number is not a participant of this group"),
    "yellowCard": (
        DeliveryStatus.FAILED,
        "WhatsApp suspended sending from this number for suspected spam (yellow card)",
    ),
    "noActiveSession": (
        DeliveryStatus.FAILED,
        "the 24-hour customer service window is closed",
    ),
}
_CALLS = {
    "offer": "📞 incoming WhatsApp call",
    "pickUp": "📞 WhatsApp call answered on the phone",
    "missed": "📞 missed WhatsApp call",
    "declined": "📞 WhatsApp call declined",
}


class Unparsable(ValueError):
    """The body is not a GREEN-API notification; `status` is the HTTP answer to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Options:
    """What the parser needs from the instance's settings."""

    id_instance: str
    groups: bool = False
    mirror_phone_messages: bool = False


def parse_notification(body: Any, options: Options) -> list[InboundEvent]:
    """The events in one notification; raises `Unparsable` for a body GREEN never sends."""
    if not isinstance(body, Mapping):
        raise Unparsable("the notification must be a JSON object")
    kind = body.get("typeWebhook")
    if not isinstance(kind, str) or not kind:
        raise Unparsable("typeWebhook is missing")
    _check_instance(body, options)
    if kind in MESSAGE_TYPES:
        return _message(kind, body, options)
    if kind == "outgoingMessageStatus":
        return _status(body, options)
    if kind == "stateInstanceChanged":
        state = _text(body, "stateInstance")
        key = f"greenapi:{options.id_instance}:state:{state}:{body.get('timestamp')}"
        return [InboundEvent(key, account_state(state))]
    if kind == "incomingCall":
        return _call(body, options)
    if kind == "quotaExceeded":
        quota = body.get("quotaData")
        detail = quota.get("description") if isinstance(quota, Mapping) else None
        log.warning("GREEN-API instance %s: plan quota exceeded: %s", options.id_instance, detail)
    return []


def _check_instance(body: Mapping[str, Any], options: Options) -> None:
    instance = body.get("instanceData")
    if not isinstance(instance, Mapping):
        raise Unparsable("instanceData is missing")
    given = str(instance.get("idInstance", ""))
    if given != options.id_instance:
        # Right token, wrong instance: two instances share a URL and a token. Refusing keeps
        # the other instance's messages out of this one's conversations, and GREEN keeps them.
        raise Unparsable(
            f"notification of instance {given!r} sent to the instance configured with "
            f"id_instance {options.id_instance!r}; give each instance its own webhook URL",
            status=422,
        )


def _message(kind: str, body: Mapping[str, Any], options: Options) -> list[InboundEvent]:
    if kind == "outgoingAPIMessageReceived":
        return []
    if kind == "outgoingMessageReceived" and not options.mirror_phone_messages:
        return []
    id_message = _text(body, "idMessage")
    sender_data = body.get("senderData")
    if not isinstance(sender_data, Mapping):
        raise Unparsable("senderData is missing")
    chat_id = _text(sender_data, "chatId", "senderData.")
    if is_ignored_chat(chat_id) or (is_group(chat_id) and not options.groups):
        return []
    sender_id = str(sender_data.get("sender") or chat_id)
    try:
        content = read_content(body.get("messageData"), sender=sender_id)
    except Unreadable as exc:
        raise Unparsable(f"messageData: {exc}", status=422) from None
    key = f"greenapi:{options.id_instance}:{chat_id}:{id_message}:{kind}"
    event = _event(kind, body, sender_data, chat_id, sender_id, id_message, content)
    return [InboundEvent(key, event)]


def _event(
    kind: str,
    body: Mapping[str, Any],
    sender_data: Mapping[str, Any],
    chat_id: str,
    sender_id: str,
    id_message: str,
    content: Content,
) -> Event:
    if content.action == "edit" and content.target_id:
        return Edit(conversation_id=chat_id, native_id=content.target_id, text=content.text)
    if content.action == "delete" and content.target_id:
        return Delete(conversation_id=chat_id, native_id=content.target_id)
    contact_name = str(sender_data.get("senderContactName") or "")
    push_name = str(sender_data.get("senderName") or "")
    chat_name = str(sender_data.get("chatName") or "")
    group = is_group(chat_id)
    return Message(
        conversation_id=chat_id,
        native_id=id_message,
        sender=Sender(
            id=sender_id,
            # The name the business saved wins over the one the customer chose.
            name=contact_name or push_name or None,
            phone=phone_of(sender_id),
        ),
        text=content.text,
        attachments=content.attachments,
        quoted_native_id=content.quoted_id,
        quoted_text=content.quoted_text,
        location=content.location,
        contacts=content.contacts,
        forwarded=content.forwarded,
        is_group=group,
        conversation_name=chat_name or (None if group else contact_name or push_name or None),
        timestamp=_timestamp(body),
        # What the business typed on its phone is shown to operators, never sent anywhere.
        is_note=content.is_note or kind == "outgoingMessageReceived",
        from_me=kind == "outgoingMessageReceived",
    )


def _status(body: Mapping[str, Any], options: Options) -> list[InboundEvent]:
    id_message = _text(body, "idMessage")
    status = _text(body, "status")
    if body.get("sendByApi") is False:
        return []
    known = STATUSES.get(status)
    if known is None:
        log.info("GREEN-API status %r of %s ignored", status, id_message)
        return []
    delivery, default_text = known
    failed = delivery is DeliveryStatus.FAILED
    description = body.get("description")
    text = description if isinstance(description, str) and description else default_text
    chat_id = body.get("chatId")
    update = StatusUpdate(
        native_id=id_message,
        status=delivery,
        conversation_id=chat_id if isinstance(chat_id, str) and chat_id else None,
        error_code=status if failed else None,
        error_text=text if failed else None,
        timestamp=_timestamp(body),
    )
    return [InboundEvent(f"greenapi:{options.id_instance}:{id_message}:{status}", update)]


def _call(body: Mapping[str, Any], options: Options) -> list[InboundEvent]:
    caller = _text(body, "from")
    id_message = _text(body, "idMessage")
    status = str(body.get("status") or "")
    text = _CALLS.get(status)
    if text is None or is_ignored_chat(caller) or (is_group(caller) and not options.groups):
        return []
    note = Message(
        conversation_id=caller,
        # One call sends several notifications; each note needs its own id.
        native_id=f"{id_message}:call:{status}",
        sender=Sender(id=caller, phone=phone_of(caller)),
        text=text,
        timestamp=_timestamp(body),
        is_note=True,
    )
    key = f"greenapi:{options.id_instance}:{caller}:{id_message}:incomingCall:{status}"
    return [InboundEvent(key, note)]


def _text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Unparsable(f"{where}{key} must be a non-empty string", status=422)
    return value


def _timestamp(body: Mapping[str, Any]) -> float | None:
    value = body.get("timestamp")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
