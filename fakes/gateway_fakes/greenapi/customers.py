"""The people on WhatsApp of a fake GREEN-API instance: a customer writes, the business
phone types, a chat gets a profile photo. Mixed into `FakeGreenApi` (core.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.testing.fake_common import Clock, IdGen, MediaStore, is_group, to_chat_id

from .messages import (
    InboundKind,
    build_message_data,
    quoted_object,
    sender_data,
    with_quote,
)
from .model import GreenSent, Notification


class CustomerSide:
    """What the customers and the business phone do; the instance's own state is core's."""

    id_instance: str
    me_id: str
    me_name: str
    quote_style: str
    state: str
    clock: Clock
    ids: IdGen
    media: MediaStore
    names: dict[str, str]
    messages: dict[str, dict[str, Any]]
    phone_sent: list[GreenSent]
    avatars: dict[str, str]
    _backlog: list[dict[str, Any]]

    def now(self) -> int:
        raise NotImplementedError

    def _emit(self, body: dict[str, Any]) -> Notification | None:
        raise NotImplementedError

    def _note(self, type_webhook: str, **fields: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _envelope(
        self, kind: str, id_message: str, sender: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def customer_writes(
        self,
        chat: str | int,
        text: str = "",
        *,
        kind: InboundKind = "text",
        quoted: str | None = None,
        legacy_quote: bool = False,
        sender: str | int | None = None,
        sender_name: str = "Customer",
        sender_contact_name: str = "",
        chat_name: str | None = None,
        caption: str = "",
        file_name: str | None = None,
        content: bytes | None = None,
        mime_type: str | None = None,
        location: tuple[float, float] | None = None,
        location_name: str = "",
        address: str = "",
        contacts: Sequence[tuple[str, str]] = (),
        target: str | None = None,
        options: Sequence[str] = (),
        multiple_answers: bool = False,
        votes: Mapping[str, Sequence[str]] | None = None,
        selected_id: str = "",
        selected_index: int = 0,
        title: str = "",
        description: str = "",
        forwarded: bool = False,
        message_data: Mapping[str, Any] | None = None,
    ) -> str:
        """A customer sends something; queues `incomingMessageReceived`, returns idMessage.

        `quoted` makes it a reply (`legacy_quote` picks the deprecated quotedMessage type);
        `target` is the message a reaction/edit/deletion/poll vote/button reply refers to;
        `sender` is the participant in a group; `kind="raw"` takes `message_data` as is.
        Until the instance is authorized, messages wait and arrive after authorization.
        """
        chat_id = to_chat_id(chat)
        if is_group(chat_id) and sender is None:
            raise ValueError("a group message needs sender= (the participant)")
        sender_id = to_chat_id(sender) if sender is not None else chat_id
        if not is_group(chat_id):
            self.names.setdefault(chat_id, chat_name or sender_name)
        elif chat_name:
            self.names[chat_id] = chat_name  # the group's subject, on every message
        id_message = self.ids.hex(32)
        data = self._build(
            kind,
            id_message,
            text,
            caption=caption,
            file_name=file_name,
            content=content,
            mime_type=mime_type,
            location=location,
            location_name=location_name,
            address=address,
            contacts=contacts,
            target=target,
            options=options,
            multiple_answers=multiple_answers,
            votes=votes,
            selected_id=selected_id,
            selected_index=selected_index,
            title=title,
            description=description,
            forwarded=forwarded,
            message_data=message_data,
        )
        data = self._quote(data, text, quoted, legacy_quote)
        self.messages[id_message] = {"chatId": chat_id, "sender": sender_id, "messageData": data}
        name = chat_name or self.names.get(chat_id, chat_id)
        who = sender_data(chat_id, sender_id, name, sender_name, sender_contact_name)
        body = self._envelope("incomingMessageReceived", id_message, who, data)
        if self.state == "authorized":
            self._emit(body)
        else:
            self._backlog.append(body)
        return id_message

    def phone_writes(
        self,
        chat: str | int,
        text: str = "",
        *,
        kind: InboundKind = "text",
        quoted: str | None = None,
        caption: str = "",
        file_name: str | None = None,
        location: tuple[float, float] | None = None,
        target: str | None = None,
    ) -> str:
        """The operator types on the phone: `outgoingMessageReceived`, never in `sent`."""
        chat_id = to_chat_id(chat)
        id_message = self.ids.hex(32)
        data = self._build(
            kind,
            id_message,
            text,
            caption=caption,
            file_name=file_name,
            location=location,
            target=target,
        )
        data = self._quote(data, text, quoted, self.quote_style == "legacy")
        self.messages[id_message] = {"chatId": chat_id, "sender": self.me_id, "messageData": data}
        self.phone_sent.append(
            GreenSent(
                id_message,
                "phone",
                chat_id,
                data["typeMessage"],
                data,
                {},
                self.clock(),
                quoted,
                status="sent",
                statuses=["sent"],
            )
        )
        who = sender_data(chat_id, self.me_id, self.names.get(chat_id, chat_id), self.me_name)
        self._emit(self._envelope("outgoingMessageReceived", id_message, who, data))
        return id_message

    def set_avatar(
        self, chat: str | int, content: bytes = b"\xff\xd8fake-jpeg", mime: str = "image/jpeg"
    ) -> str:
        """Give a chat a profile photo, hosted like WhatsApp's (a new link each time)."""
        chat_id = to_chat_id(chat)
        name = f"{self.id_instance}/avatars/{self.ids.hex(8).lower()}.jpg"
        self.avatars[chat_id] = self.media.put(name, content, mime) + f"?oe={self.now():x}"
        return self.avatars[chat_id]

    def customer_calls(self, chat: str | int, status: str = "offer") -> str:
        """`incomingCall` [P shape: from/status]; status offer/pickUp/hangUp/missed/declined."""
        id_message = self.ids.hex(32)
        fields = {"idMessage": id_message, "from": to_chat_id(chat), "status": status}
        self._emit(self._note("incomingCall", **fields))
        return id_message

    def _build(self, kind: str, seed: str, text: str, **content: Any) -> dict[str, Any]:
        def put(name: str, data: bytes, mime: str) -> str:
            return self.media.put(f"{self.id_instance}/{seed.lower()}/{name}", data, mime)

        return build_message_data(
            kind, seed, text, put_media=put, known=self.messages, me_id=self.me_id, **content
        )

    def _quote(
        self, data: dict[str, Any], text: str, quoted: str | None, legacy: bool
    ) -> dict[str, Any]:
        if not quoted:
            return data
        original = self.messages.get(quoted)
        participant = str(original["sender"]) if original else self.me_id
        obj = quoted_object(quoted, participant, original["messageData"] if original else None)
        return with_quote(data, text, obj, legacy=legacy)
