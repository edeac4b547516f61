"""OAuth with Bitrix24's authorization server: refreshing tokens, once at a time per portal.

A refresh token works exactly once (the answer carries the next one), so two refreshes of
the same portal racing each other would leave the loser with `invalid_grant` and the portal
unusable. `Tokens.refresh` therefore runs under a per-portal lock, and a caller that waited
on the lock uses the pair the winner stored instead of refreshing again.

The token URL is the configured `oauth_url`, or the one of the portal's `server_endpoint`
when that is a known Bitrix24 authorization server: a request (an install page POST) can
name any `server_endpoint`, and the gateway must not hand its client secret to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gateway import DeliveryError, PermanentError, TemporaryError

from .errors import classify, portal_problem
from .records import PortalRecord, PortalStore

log = logging.getLogger("gateway.bitrix24")

DEFAULT_OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"
TRUSTED_OAUTH_HOSTS = frozenset({"oauth.bitrix.info", "oauth.bitrix24.tech"})
OAUTH_TIMEOUT = httpx.Timeout(20.0, connect=10.0)


def https_or_loopback(url: str) -> bool:
    """https, or plain http to this machine (a local rehearsal against a fake portal)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def plain_http_warning(instance: str, oauth_url: object) -> str | None:
    """What `gateway check` and the start log say of an `oauth_url` over plain http."""
    url = str(oauth_url or "")
    if not url.startswith("http://"):
        return None
    return (
        f"crms.{instance}: oauth_url {url} is plain http to this machine: REHEARSAL ONLY "
        "(a fake portal); the client secret crosses it unencrypted"
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """What the authorization server answered to a refresh: trustworthy portal facts."""

    access_token: str
    refresh_token: str
    expires_at: float
    member_id: str
    client_endpoint: str
    server_endpoint: str
    scope: str
    status: str


class OAuthClient:
    """Talks to the token endpoint with the app's client id and secret."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        client_id: str,
        client_secret: str,
        oauth_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.client_id = client_id
        self.client_secret = client_secret
        self.oauth_url = oauth_url
        self.clock = clock

    def token_url(self, server_endpoint: str | None) -> str:
        if self.oauth_url:
            return self.oauth_url
        parts = urlsplit(server_endpoint or "")
        if parts.scheme == "https" and parts.hostname in TRUSTED_OAUTH_HOSTS:
            return f"https://{parts.netloc}/oauth/token/"
        return DEFAULT_OAUTH_URL

    async def refresh(self, refresh_token: str, server_endpoint: str | None) -> Grant:
        """Trade `refresh_token` for a new pair; raises a `DeliveryError` with the code."""
        url = self.token_url(server_endpoint)
        params = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": refresh_token,
        }
        host = urlsplit(url).netloc
        try:
            # GET with the secret in the query is the documented form; error texts below
            # never include the URL for that reason.
            response = await self.http.get(url, params=params, timeout=OAUTH_TIMEOUT)
        except httpx.TransportError as exc:
            raise TemporaryError(
                f"cannot reach the OAuth server {host}: {type(exc).__name__}",
                code="OAUTH_UNREACHABLE",
            ) from None
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise TemporaryError(
                f"the OAuth server {host} answered HTTP {response.status_code} without JSON",
                code=f"HTTP_{response.status_code}",
            )
        if "error" in data:
            raise classify(
                str(data.get("error")),
                str(data.get("error_description") or ""),
                status=response.status_code,
            )
        return self._grant(data)

    def _grant(self, data: Mapping[str, Any]) -> Grant:
        access = data.get("access_token")
        refresh = data.get("refresh_token")
        member_id = data.get("member_id")
        endpoint = str(data.get("client_endpoint") or "")
        if not (
            isinstance(access, str) and isinstance(refresh, str) and isinstance(member_id, str)
        ):
            raise TemporaryError("the OAuth server's answer lacks tokens or member_id")
        if urlsplit(endpoint).scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
            raise TemporaryError("the OAuth server's answer lacks the portal's client_endpoint")
        expires = data.get("expires")
        if isinstance(expires, int | float | str) and str(expires).isdigit():
            expires_at = float(expires)
        else:
            expires_in = str(data.get("expires_in") or "")
            seconds = float(expires_in) if expires_in.isdigit() else 3600.0
            expires_at = self.clock() + seconds
        if not endpoint.endswith("/"):
            endpoint += "/"
        return Grant(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            member_id=member_id,
            client_endpoint=endpoint,
            server_endpoint=str(data.get("server_endpoint") or ""),
            scope=str(data.get("scope") or ""),
            status=str(data.get("status") or ""),
        )


def apply_grant(record: PortalRecord, grant: Grant, now: float) -> None:
    record.access_token = grant.access_token
    record.refresh_token = grant.refresh_token
    record.expires_at = grant.expires_at
    record.client_endpoint = grant.client_endpoint
    if grant.server_endpoint:
        record.server_endpoint = grant.server_endpoint
    if grant.status:
        record.status = grant.status
    record.refreshed_at = now


ProblemHook = Callable[[PortalRecord], Awaitable[None]]


class Tokens:
    """Single-flight token refresh per portal, marking portals whose grant was refused."""

    def __init__(
        self,
        store: PortalStore,
        oauth: OAuthClient,
        on_problem: ProblemHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.oauth = oauth
        self.on_problem = on_problem
        self.clock = clock
        self.refreshes = 0

    async def refresh(self, member_id: str, stale_token: str | None = None) -> PortalRecord:
        """A record with a working token; refreshes only if `stale_token` is still current.

        `stale_token` is the access token a call was refused with; None forces a refresh
        (the idle-portal keep-alive).
        """
        async with self.store.lock(member_id):
            record = await self.store.get(member_id, fresh=True)
            if record is None:
                raise PermanentError(
                    "the app is not installed on this portal", code="NOT_INSTALLED"
                )
            if record.problem:
                raise PermanentError(
                    record.problem_detail or record.problem, code=record.problem.upper()
                )
            if stale_token is not None and record.access_token != stale_token:
                return record  # another task refreshed while this one waited on the lock
            try:
                grant = await self.oauth.refresh(record.refresh_token, record.server_endpoint)
            except DeliveryError as exc:
                await self._refused(record, exc)
                raise
            if grant.member_id != record.member_id:
                raise PermanentError(
                    "the OAuth server answered for another portal", code="MEMBER_MISMATCH"
                )
            apply_grant(record, grant, self.clock())
            await self.store.put(record)
            self.refreshes += 1
            log.info("refreshed the tokens of portal %s", record.domain)
            return record

    async def _refused(self, record: PortalRecord, exc: DeliveryError) -> None:
        problem = portal_problem(exc.code)
        if problem is None:
            return
        await mark_problem(self.store, record, problem[0], f"{record.domain}: {problem[1]}")
        if self.on_problem is not None:
            await self.on_problem(record)


async def mark_problem(store: PortalStore, record: PortalRecord, problem: str, detail: str) -> None:
    record.problem = problem
    record.problem_detail = detail
    await store.put(record)
    log.warning("portal %s: %s", record.domain, detail)
