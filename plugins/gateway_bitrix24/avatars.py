"""Customers' WhatsApp profile photos as their Bitrix24 avatar (`user.picture`).

`imconnector.send.messages` takes `user.picture = {"url": …}`, and Bitrix24 downloads it
whenever the user block of a message differs from the last one it saw (imconnector keeps an
MD5 of the block), replacing the photo it had. So the picture is sent only when the
customer's photo is new or changed, not with every message: the gateway remembers, per
portal, line and chat, which photo it last gave (its URL without the query, since WhatsApp
photo links carry an expiry there), and only once the message carrying it was accepted.

The photo's URL is the WhatsApp provider's word: it is downloaded through the guarded
fetcher (`[fetch]` rules: public addresses only, size and time limits) into the media store,
and Bitrix24 gets the media store's link, like any customer file. A photo that cannot be
fetched, or is no image, is left out: the message goes without it, never held for it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

from gateway import Fetcher, FetchError, MediaStorage, ProviderState

log = logging.getLogger("gateway.bitrix24")


def photo_key(member_id: str, line: int, chat_id: str) -> str:
    # Under `user:{member_id}:` so that an uninstall forgets it with the chat users.
    return f"user:{member_id}:{line}:{chat_id}:photo"


def photo_mark(url: str) -> str:
    """What identifies a photo across its short-lived links: the URL without its query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Avatars:
    def __init__(self, state: ProviderState, media: MediaStorage, fetcher: Fetcher) -> None:
        self.state = state
        self.media = media
        self.fetcher = fetcher
        self._given: dict[str, str] = {}

    async def picture(
        self, member_id: str, line: int, chat_id: str, url: str
    ) -> tuple[dict[str, str], tuple[str, str]] | None:
        """`user.picture` when the photo at `url` was not given yet, and what to remember
        once the message is accepted; None when it was, or cannot be had."""
        key, mark = photo_key(member_id, line, chat_id), photo_mark(url)
        if key not in self._given:
            stored = await self.state.get(key)
            self._given[key] = stored if isinstance(stored, str) else ""
        if self._given[key] == mark:
            return None
        try:
            photo = await self.media.rehost(url, self.fetcher, filename="avatar.jpg")
        except FetchError as exc:
            log.info("a customer photo of chat %s is left out: %s", chat_id, exc)
            return None
        if not (photo.mime_type or "").startswith("image/"):
            log.info("a customer photo of chat %s is no image (%s)", chat_id, photo.mime_type)
            return None
        return {"url": photo.url}, (key, mark)

    async def remember(self, key: str, mark: str) -> None:
        if self._given.get(key) != mark:
            await self.state.put(key, mark)
            self._given[key] = mark
