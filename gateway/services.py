"""The shared services a gateway builds from its settings: HTTP client, fetcher, media store."""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Callable
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.request import getproxies

import httpx

from gateway.fetch import GuardedFetcher
from gateway.http_transport import AsyncioTransport
from gateway.media import MediaStore
from gateway.settings import GatewaySettings


class NoCookieJar(CookieJar):
    """Keeps none of the cookies servers set. One client serves every tenant, and tenants
    share providers' hosts (GREEN-API's and Meta's APIs, Bitrix24's OAuth server, a media
    host): a cookie kept from one instance's answer would go out with the next instance's
    request. A provider that needs a cookie sends its `Cookie` header itself."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def http_client(ca_file: str | None = None) -> httpx.AsyncClient:
    """The one outbound HTTP client every provider shares; `ca_file` (settings) adds
    certificate authorities to the usual ones. It keeps no cookies (`NoCookieJar`)."""
    verify: ssl.SSLContext | bool = True
    if ca_file:
        verify = httpx.create_ssl_context()
        verify.load_verify_locations(cafile=ca_file)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    # httpx takes proxies from the environment only for the transports it builds itself.
    uses_proxy = any(key in getproxies() for key in ("http", "https", "all"))
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=limits,
        transport=None if uses_proxy else AsyncioTransport(verify=verify, limits=limits),
        follow_redirects=False,
        cookies=NoCookieJar(),
    )


def guarded_fetcher(
    settings: GatewaySettings, http: httpx.AsyncClient, resolver: Callable[[str], Any] | None
) -> GuardedFetcher:
    fetch = settings.fetch
    return GuardedFetcher(
        http,
        allow_private=fetch.allow_private,
        allowed_hosts=fetch.allowed_hosts,
        timeout=fetch.timeout,
        max_bytes=fetch.max_bytes,
        resolver=resolver,
    )


def media_store(settings: GatewaySettings, clock: Callable[[], float]) -> MediaStore:
    media = settings.media
    return MediaStore(
        Path(media.directory),
        settings.public_url,
        secret=media_secret(Path(media.directory)),
        max_total_bytes=media.max_total_bytes,
        max_file_bytes=media.max_file_bytes,
        ttl_seconds=media.ttl_seconds,
        clock=clock,
    )


def media_secret(directory: Path) -> bytes:
    """The key that names media files; kept beside them so links survive a restart."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # customers' files: owner only
    path = directory / ".secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        # Processes sharing the folder (`--workers N`) start together: each writes a key of
        # its own aside, the first link wins, and all read that one, never a half-written file.
        draft = directory / f".secret.{os.getpid()}.{secrets.token_hex(4)}"
        with open(draft, "xb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secrets.token_bytes(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
        return path.read_bytes()
