"""Media both ways: signed gateway links for inbound media ids, uploads for outbound files.

Inbound: Meta sends a media *id*; the file sits behind two authenticated calls
(`GET /{media_id}` for a URL valid ~5 minutes, then that URL with the bearer token), and the
id itself lives 7 days. The webhook must be answered fast and must not depend on Meta being
up, so parsing does no download. Each attachment gets a URL of the gateway instead:

    {public_url}/webhooks/{instance}/media/{media_id}.{expires}.{signature}/{file name}

The signature is an HMAC under a random key kept in the instance's durable state, so links
survive restarts, cannot be forged or guessed, and stop working after the id's 7 days. The
first fetch of a link (by the CRM, whenever it gets to it) downloads the file through the
guarded fetcher, re-hosts it in the media store and redirects to that `/media/...` URL; later
fetches redirect to the same stored copy while it lives. If Meta's URL has expired between
the two calls, a fresh one is asked for once. `CloudApiProvider.resolve_media` does the same
for code that wants the stored copy directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from gateway import FetchError, ForbiddenAddress, InstanceContext, MediaTooLarge, StoredMedia
from gateway_cloudapi.client import GraphClient

MEDIA_ID_LIFETIME = 7 * 86400.0
LINK_PREFIX = "media/"
_KEY_NAME = "media_link_key"
_CACHE_PREFIX = "media:"
# A stored copy this close to expiring is fetched again rather than handed out.
_CACHE_MARGIN = 3600.0


@dataclass(frozen=True, slots=True)
class MediaRef:
    """What a verified link names."""

    media_id: str
    expires: int
    filename: str | None


class LinkError(Exception):
    """A media link that is forged, malformed (`status` 404) or expired (410)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class MediaLinks:
    """Signs and checks links, and turns a media id into a stored copy's URL."""

    def __init__(
        self,
        context: InstanceContext,
        client: GraphClient,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.context = context
        self.client = client
        self.clock = clock
        self.wall_clock = wall_clock
        self._key: bytes | None = None
        self._resolved = 0

    async def ready(self) -> None:
        """Load (or make, once, for every process sharing the store) the signing key."""
        if self._key is not None:
            return
        state = self.context.state
        async with state.lock(_KEY_NAME):
            stored = await state.get(_KEY_NAME)
            if not isinstance(stored, str):
                stored = secrets.token_hex(32)
                await state.put(_KEY_NAME, stored)
        self._key = bytes.fromhex(stored)

    # links -------------------------------------------------------------------------------
    def link(self, media_id: str, filename: str | None, kind: str, sent_at: float | None) -> str:
        """The gateway URL for `media_id`; `ready()` must have been awaited."""
        expires = int((sent_at or self.clock()) + MEDIA_ID_LIFETIME)
        token = f"{media_id}.{expires}.{self._sign(media_id, expires)}"
        name = quote(filename or kind, safe="")
        return self.context.hub.webhook_url(self.context.name, f"{LINK_PREFIX}{token}/{name}")

    def verify(self, subpath: str) -> MediaRef:
        """The media a link's `subpath` (`media/{token}[/{name}]`) names; raises `LinkError`."""
        token, _, name = subpath.removeprefix(LINK_PREFIX).partition("/")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise LinkError("no such media link", 404)
        media_id, expires = parts[0], int(parts[1])
        if not hmac.compare_digest(parts[2].encode(), self._sign(media_id, expires).encode()):
            raise LinkError("no such media link", 404)
        if self.clock() >= expires:
            raise LinkError("this media link has expired (WhatsApp keeps files 7 days)", 410)
        return MediaRef(media_id, expires, name or None)

    def _sign(self, media_id: str, expires: int) -> str:
        assert self._key is not None, "MediaLinks.ready() was not awaited"
        message = f"{self.context.name}:{media_id}:{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    # downloads ---------------------------------------------------------------------------
    async def stored_url(self, media_id: str, filename: str | None) -> str:
        """A media-store URL with the file of `media_id`, downloading it at most once."""
        state = self.context.state
        key = _CACHE_PREFIX + media_id
        async with state.lock(key):
            cached = await state.get(key)
            now = self.wall_clock()
            if (
                isinstance(cached, dict)
                and float(cached.get("expires_at", 0)) > now + _CACHE_MARGIN
            ):
                return str(cached["url"])
            stored = await self._download(media_id, filename)
            await state.put(key, {"url": stored.url, "expires_at": stored.expires_at})
        self._resolved += 1
        if self._resolved % 100 == 0:
            await self.forget_expired()
        return stored.url

    async def _download(self, media_id: str, filename: str | None) -> StoredMedia:
        last: FetchError | None = None
        for _ in range(2):
            info = await self.client.media_info(media_id)
            url = info.get("url")
            if not isinstance(url, str):
                raise FetchError("the Cloud API gave no download URL for this media")
            mime = info.get("mime_type")
            try:
                return await self.context.media.rehost(
                    url,
                    self.context.fetcher,
                    headers=self.client.auth_headers,
                    filename=filename,
                    mime_type=mime if isinstance(mime, str) else None,
                )
            except (MediaTooLarge, ForbiddenAddress):
                raise
            except FetchError as exc:
                # Most likely the five-minute URL expired on the way: ask for a fresh one.
                last = exc
        assert last is not None
        raise last

    async def forget_expired(self) -> int:
        """Drop cache entries whose stored copy has expired."""
        now = self.wall_clock()
        removed = 0
        for key, value in await self.context.state.items(_CACHE_PREFIX):
            if not isinstance(value, dict) or float(value.get("expires_at", 0)) <= now:
                await self.context.state.delete(key)
                removed += 1
        return removed
