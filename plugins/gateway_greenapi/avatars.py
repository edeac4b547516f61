"""Customers' profile photos (`getAvatar`), for CRMs that show them.

A person's chat gets its photo URL on its messages (`Sender.avatar_url`); the CRM decides
what to do with it and downloads it through the guarded fetcher. `getAvatar` is asked at
most once a day per chat (kept in memory), with a short timeout: a photo is a nicety, so a
failure or a slow answer only means this message goes without one. Groups and messages
typed on the business phone get none (the photo would be the group's or the business's).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gateway import DeliveryError, InboundEvent, Message
from gateway_greenapi.chats import is_group
from gateway_greenapi.client import GreenClient

log = logging.getLogger("gateway_greenapi")

#: How long an answer (a photo or none) is used before `getAvatar` is asked again.
TTL_SECONDS = 86_400.0
#: A failed question is asked again after this long.
RETRY_SECONDS = 600.0
#: The longest a webhook waits for `getAvatar`.
ASK_SECONDS = 3.0
#: Chats remembered per instance (the oldest are forgotten first).
LIMIT = 10_000


class Avatars:
    def __init__(self, client: GreenClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._known: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    async def attach(self, events: Sequence[InboundEvent]) -> list[InboundEvent]:
        """`events` with the photo of each person's chat on its customer messages."""
        out: list[InboundEvent] = []
        for inbound in events:
            message = inbound.event
            if (
                isinstance(message, Message)
                and not message.from_me
                and not is_group(message.conversation_id)
                and message.sender.avatar_url is None
            ):
                url = await self.url(message.conversation_id)
                if url is not None:
                    sender = dataclasses.replace(message.sender, avatar_url=url)
                    inbound = dataclasses.replace(
                        inbound, event=dataclasses.replace(message, sender=sender)
                    )
            out.append(inbound)
        return out

    async def url(self, chat_id: str) -> str | None:
        now = self.clock()
        known = self._known.get(chat_id)
        if known is not None and known[1] > now:
            self._known.move_to_end(chat_id)
            return known[0]
        try:
            url = await self.client.avatar(chat_id, ASK_SECONDS)
        except DeliveryError as exc:
            log.info("getAvatar of %s failed: %s", chat_id, exc)
            self._keep(chat_id, known[0] if known else None, now + RETRY_SECONDS)
            return known[0] if known else None
        self._keep(chat_id, url, now + TTL_SECONDS)
        return url

    def _keep(self, chat_id: str, url: str | None, until: float) -> None:
        self._known[chat_id] = (url, until)
        self._known.move_to_end(chat_id)
        while len(self._known) > LIMIT:
            self._known.popitem(last=False)
