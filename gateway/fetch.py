"""The guarded fetcher: every download of a URL a provider handed us goes through it.

A webhook can name any URL as a "media file"; fetched blindly, it would let anyone who reaches
a webhook read the gateway's own network (cloud metadata at 169.254.169.254, localhost ports).
So each URL and each redirect hop must resolve to public addresses only, unless the operator
allowed private space or that host. DNS is checked, not pinned: a name re-resolving between
check and connect (DNS rebinding) is not caught; force egress through a proxy if that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import anyio
import httpx

from gateway.errors import FetchError, ForbiddenAddress, MediaTooLarge

Resolver = Callable[[str], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers that prove who we are to the first host; a redirect to another origin must not
# carry them (a provider's bearer token would leak to whatever the Location names).
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_DISPOSITION_PARAM = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)\Z")
_IPV4_PART = re.compile(r"(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)\Z")
_FORBIDDEN_FLAGS = (
    *("is_private", "is_loopback", "is_link_local"),
    *("is_multicast", "is_reserved", "is_unspecified"),
)
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # not "private" to `ipaddress`, not public


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A downloaded file; `url` is where it was finally found (after redirects)."""

    content: bytes
    mime_type: str | None
    filename: str | None
    url: str


def redact_url(url: str | httpx.URL) -> str:
    """`url` without credentials, query or fragment, which often carry access tokens, and
    with token-shaped path segments masked: Telegram's `/bot<id>:<token>/` and
    GREEN-API's `/<apiTokenInstance>` put the credential in the path itself."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    path = "/".join(_redact_segment(segment) for segment in parsed.path.split("/"))
    return f"{parsed.scheme}://{host}{port}{path}"


# `bot123456:AAE...` (Telegram), or a long run of letters and digits mixed (an API token,
# a signed key). File names have a dot or are short, ids are digits only: both are kept.
_BOT_TOKEN = re.compile(r"(bot)?\d+:[\w-]{20,}\Z")
_TOKEN_SEGMENT = re.compile(r"(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{24,}\Z")


def _redact_segment(segment: str) -> str:
    if _BOT_TOKEN.match(segment):
        return "bot***" if segment.startswith("bot") else "***"
    if _TOKEN_SEGMENT.match(segment):
        return "***"
    return segment


def _scrub(text: str) -> str:
    # httpx error texts sometimes quote the URL; drop anything from a '?' to the next space.
    return re.sub(r"\?[^\s'\"<>]*", "", text)


def is_forbidden_address(address: IPAddress) -> bool:
    """Whether connecting to `address` would reach something not on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        # 6to4 is globally routable as a prefix but delivers to the IPv4 address it embeds
        # (NAT64's 64:ff9b::/96 lies in the reserved ::/8 and is refused whole below).
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and is_forbidden_address(embedded):
            return True
    # `is_global` alone would do on 3.11, but its meaning has shifted between Python
    # versions; the explicit flags keep every range the docstring promises refused.
    if not address.is_global or any(getattr(address, flag) for flag in _FORBIDDEN_FLAGS):
        return True
    return isinstance(address, ipaddress.IPv4Address) and address in _CGNAT


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read a host the way `inet_aton` (and so the OS resolver) would: `2130706433`,
    `0x7f.1`, `127.1` and `0177.0.0.1` all mean 127.0.0.1. None if it is not numeric."""
    labels = host.split(".")
    if not _NUMERIC_LABEL.match(labels[-1]):
        return None
    invalid = ForbiddenAddress(f"host {host!r} is not a valid IPv4 address")
    if len(labels) > 4 or not all(_IPV4_PART.match(label) for label in labels):
        raise invalid
    numbers = [
        int(label, 16) if label.startswith("0x") else int(label, 8 if label[0] == "0" else 10)
        for label in labels
    ]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise invalid
    value = last
    for index, number in enumerate(head):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


async def system_resolver(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedFetcher:
    """Downloads URLs named by providers, refusing non-public addresses and huge files."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        allow_private: bool = False,
        allowed_hosts: Iterable[str] = (),
        timeout: float = 30.0,
        max_bytes: int = 64 * 1024 * 1024,
        resolver: Resolver | None = None,
    ) -> None:
        self.http = http
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.resolver: Resolver = resolver or system_resolver
        hosts = [h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()]
        self._exact_hosts = frozenset(h for h in hosts if not h.startswith("*."))
        self._suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def host_allowed(self, host: str) -> bool:
        """Whether the operator trusts `host` (exact name, or `*.suffix` for subdomains)."""
        host = host.lower().rstrip(".")
        return host in self._exact_hosts or host.endswith(self._suffixes)

    async def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """Raise `ForbiddenAddress` unless `url` is http(s) to a public address; the parsed URL."""
        try:
            parsed = httpx.URL(str(url))
        except (httpx.InvalidURL, TypeError) as exc:
            raise ForbiddenAddress(f"invalid URL: {_scrub(str(exc))}") from None
        safe = redact_url(parsed)
        if parsed.scheme not in ("http", "https"):
            raise ForbiddenAddress(f"only http and https URLs can be fetched, not {safe}")
        if parsed.userinfo:
            raise ForbiddenAddress(f"URLs with credentials cannot be fetched: {safe}")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise ForbiddenAddress(f"URL has no host: {safe}")
        if self.allow_private or self.host_allowed(host):
            return parsed
        for address in await self._addresses(host, safe):
            if is_forbidden_address(address):
                raise ForbiddenAddress(
                    f"{safe} points at {address}, which is not a public address "
                    "(list the host in fetch.allowed_hosts if it is trusted)"
                )
        return parsed

    async def _addresses(self, host: str, safe: str) -> list[IPAddress]:
        if ":" in host:  # an IPv6 literal, possibly with a %zone
            try:
                return [ipaddress.IPv6Address(unquote(host))]
            except ValueError:
                raise ForbiddenAddress(f"invalid IPv6 address in {safe}") from None
        legacy = parse_legacy_ipv4(host)
        if legacy is not None:
            return [legacy]
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
            raise ForbiddenAddress(f"invalid host name in {safe}")
        if host == "localhost" or host.endswith(".localhost"):
            raise ForbiddenAddress(f"{safe} points at localhost")
        try:
            found = await self.resolver(host)
        except OSError as exc:
            raise FetchError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        if not found:
            raise FetchError(f"cannot resolve {host}: no addresses")
        addresses: list[IPAddress] = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                raise ForbiddenAddress(f"{host} resolved to an invalid address") from None
        return addresses

    async def fetch(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> FetchedFile:
        """Download `url`, following up to 5 redirects, each checked like the first URL."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        try:
            with anyio.fail_after(self.timeout):
                return await self._fetch(url, dict(headers or {}), limit)
        except TimeoutError:
            raise FetchError(
                f"timed out after {self.timeout:g} s fetching {redact_url(url)}"
            ) from None

    async def _fetch(self, url: str, headers: dict[str, str], limit: int) -> FetchedFile:
        current = await self.check_url(url)
        for hop in range(MAX_REDIRECTS + 1):
            safe = redact_url(current)
            try:
                async with self.http.stream(
                    "GET", current, headers=headers, follow_redirects=False
                ) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        target = current.join(location)
                        if hop == MAX_REDIRECTS:
                            raise FetchError(f"more than {MAX_REDIRECTS} redirects from {safe}")
                        headers = _headers_for_redirect(headers, current, target)
                        current = await self.check_url(target)
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"HTTP {response.status_code} fetching {safe}",
                            status=response.status_code,
                        )
                    content = await _read_capped(response, limit, safe)
                    return FetchedFile(
                        content=content,
                        mime_type=_mime_type(response.headers.get("content-type")),
                        filename=_filename(response.headers.get("content-disposition"), current),
                        url=str(current),
                    )
            except httpx.TimeoutException:
                raise FetchError(f"timed out fetching {safe}") from None
            except httpx.HTTPError as exc:
                detail = _scrub(str(exc)) or type(exc).__name__
                raise FetchError(f"cannot fetch {safe}: {type(exc).__name__}: {detail}") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _headers_for_redirect(
    headers: dict[str, str], source: httpx.URL, target: httpx.URL
) -> dict[str, str]:
    if source.join("/") == target.join("/"):  # same scheme, host and port
        return headers
    return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}


async def _read_capped(response: httpx.Response, limit: int, safe: str) -> bytes:
    declared = response.headers.get("content-length")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    # A compressed body's Content-Length says nothing of its decoded size; the count does.
    if declared and declared.isdigit() and not encoded and int(declared) > limit:
        raise MediaTooLarge(f"{safe} is larger than {limit} bytes ({declared} bytes)")
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > limit:
            raise MediaTooLarge(f"{safe} is larger than {limit} bytes")
    return bytes(buffer)


def _mime_type(content_type: str | None) -> str | None:
    return (content_type or "").split(";", 1)[0].strip().lower() or None


def _filename(disposition: str | None, url: httpx.URL) -> str | None:
    name = disposition_filename(disposition) if disposition else None
    if not name:
        name = unquote(url.path.rsplit("/", 1)[-1])
    return clean_filename(name)


def disposition_filename(disposition: str) -> str | None:
    """The file name in a Content-Disposition header, `filename*` (RFC 5987) first."""
    params: dict[str, str] = {}
    for match in _DISPOSITION_PARAM.finditer(disposition):
        value = match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(match.group(1).lower(), value)
    extended = params.get("filename*")
    if extended and extended.count("'") >= 2:
        charset, _language, encoded = extended.split("'", 2)
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return unquote(encoded, errors="replace")
    return params.get("filename") or None


def clean_filename(name: str | None) -> str | None:
    """A file name safe to show and store: no directories, control characters or dots only."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if not name.strip("."):
        return None
    return name[:200]
