"""What the core hands plugins: the context of the lifecycle hooks, and the media store and
the guarded fetcher as Protocols.

`PluginContext` is what `startup`, `shutdown` and `http_routes` receive (not the gateway).
`InstanceContext.media` and `InstanceContext.fetcher` are typed by these, so a plugin depends
on the promises below, not on the core's classes (`gateway.media.MediaStore`,
`gateway.fetch.GuardedFetcher`), which may change in any release. Most plugins need neither:
an attachment marked `rehost=True` is downloaded and re-hosted by the core before delivery
(see docs/plugins.md, "Media").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from gateway.fetch import FetchedFile
    from gateway.media import StoredMedia
    from gateway.models import Attachment
    from gateway.providers import Hub


class Fetcher(Protocol):
    """Downloads URLs a provider names, refusing non-public addresses and oversized files.

    Every hop of a redirect is checked like the first URL; credential headers are dropped on
    a redirect to another host; URLs in its errors are redacted (no query, no token-shaped
    path segments). Raises `FetchError` (`ForbiddenAddress`, `MediaTooLarge`); its
    `.permanent` says whether trying again could help.
    """

    @property
    def max_bytes(self) -> int:
        """The largest download allowed by the operator (`[fetch] max_bytes`)."""
        ...

    async def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """The parsed `url` if it may be fetched (http(s), no credentials in it, a public
        address or a host the operator allowed); `ForbiddenAddress` otherwise."""
        ...

    async def fetch(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> FetchedFile:
        """Download `url` (sending `headers`, at most `max_bytes`, default `self.max_bytes`)."""
        ...


class MediaStorage(Protocol):
    """Expiring files the gateway serves under `{public_url}/media/…` by unguessable links.

    Raises `MediaTooLarge` over `max_file_bytes`; a local fault (disk full) is a permanent
    `FetchError` naming the gateway, not the provider.
    """

    @property
    def max_file_bytes(self) -> int:
        """The largest file it keeps (`[media] max_file_bytes`)."""
        ...

    async def put(
        self,
        content: bytes,
        *,
        filename: str | None,
        mime_type: str | None,
        ttl: float | None = None,
    ) -> StoredMedia:
        """Store `content`; its public link lives `ttl` seconds (default `[media] ttl`)."""
        ...

    async def rehost(
        self,
        url: str,
        fetcher: Fetcher,
        *,
        headers: Mapping[str, str] | None = None,
        filename: str | None = None,
        mime_type: str | None = None,
    ) -> StoredMedia:
        """Download `url` through `fetcher` (with `headers`, e.g. the provider's bearer
        token) and store it. Raises `FetchError` like `Fetcher.fetch`."""
        ...

    async def rehost_attachment(
        self,
        attachment: Attachment,
        fetcher: Fetcher,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Attachment:
        """`attachment` downloaded (from `url`, default its own) and given the store's link,
        size and type, with `rehost=False`. Raises like `rehost`."""
        ...


class PluginContext:
    """What the `startup`, `shutdown` and `http_routes` hooks get of the running gateway.

    A plugin that is no provider (a filter, an extra page, an integration that reacts to
    account changes) asks the gateway through this, never through its internals:

    * `public_url`: where providers and browsers reach the gateway (no trailing slash);
    * `hub`: the `Hub` every provider holds (instance names, account states, routes to read,
      add and remove, events to ingest with `emit`, webhook URLs);
    * `http`: the gateway's shared `httpx.AsyncClient` (its pool; never close it);
    * `settings(plugin)`: the plugin's own `[plugins.NAME]` table of the settings.

    In `http_routes` the gateway has not started yet: use `hub` in the route handlers, which
    run once it has.
    """

    def __init__(
        self,
        *,
        public_url: str,
        hub: Hub,
        http: httpx.AsyncClient,
        plugin_settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.hub = hub
        self.http = http
        self._settings = dict(plugin_settings or {})

    def settings(self, plugin: str) -> Mapping[str, Any]:
        """The `[plugins.NAME]` table for `plugin` (NAME lower-cased), empty when there is
        none. The gateway checks only that it is a table: check the keys yourself."""
        return self._settings.get(plugin.lower(), {})
