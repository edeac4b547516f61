"""Tokens and the OAuth token server (`oauth.bitrix.info/oauth/token/`).

Refresh tokens are single-use: each refresh returns a new pair and burns the old
refresh token, so a second use (a lost race between two refreshers) gets
`invalid_grant` — the behaviour the gateway's single-flight refresh must survive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .envelope import fault_response, json_response, system_error
from .formdata import parse_query

if TYPE_CHECKING:
    from .portal import FakePortal

REFRESH_TTL = 180 * 86400.0
CODE_TTL = 30.0


@dataclass
class AccessToken:
    token: str
    user_id: int
    expires_at: float
    revoked: bool = False


@dataclass
class RefreshToken:
    token: str
    user_id: int
    expires_at: float
    used: bool = False


@dataclass
class TokenPair:
    """A freshly issued pair; `expires_at` is on the portal clock."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires_at: float
    user_id: int


class TokenStore:
    """Counter-based tokens (`access-1`, `refresh-1`, ...) checked against the clock."""

    def __init__(self, clock: Callable[[], float], ttl: int, prefix: str = "") -> None:
        self._clock = clock
        self.ttl = ttl
        self._prefix = prefix
        self._serial = 0
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.codes: dict[str, tuple[int, float]] = {}

    def issue(self, user_id: int = 1) -> TokenPair:
        self._serial += 1
        now = self._clock()
        access = f"{self._prefix}access-{self._serial}"
        refresh = f"{self._prefix}refresh-{self._serial}"
        self.access[access] = AccessToken(access, user_id, now + self.ttl)
        self.refresh[refresh] = RefreshToken(refresh, user_id, now + REFRESH_TTL)
        return TokenPair(access, refresh, self.ttl, now + self.ttl, user_id)

    def check(self, token: str) -> AccessToken:
        found = self.access.get(token)
        if found is None or found.revoked:
            raise system_error("invalid_token")
        if found.expires_at <= self._clock():
            raise system_error("expired_token")
        return found

    def expire(self, token: str | None = None) -> None:
        """Expire one access token, or all of them."""
        now = self._clock()
        for item in self.access.values():
            if token is None or item.token == token:
                item.expires_at = min(item.expires_at, now)

    def revoke_all(self) -> None:
        for item in self.access.values():
            item.revoked = True
        for refresh in self.refresh.values():
            refresh.used = True
        self.codes.clear()

    def use_refresh(self, token: str) -> TokenPair | None:
        found = self.refresh.get(token)
        if found is None or found.used or found.expires_at <= self._clock():
            return None
        found.used = True
        return self.issue(found.user_id)

    def issue_code(self, user_id: int = 1) -> str:
        self._serial += 1
        code = f"{self._prefix}code-{self._serial}"
        self.codes[code] = (user_id, self._clock() + CODE_TTL)
        return code

    def use_code(self, code: str) -> TokenPair | None:
        entry = self.codes.pop(code, None)
        if entry is None or entry[1] <= self._clock():
            return None
        return self.issue(entry[0])


def _error(code: str, description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": code, "error_description": description}


def grant(portal: FakePortal, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answer one token request: (HTTP status, JSON body)."""
    grant_type = str(params.get("grant_type", ""))
    if grant_type not in ("refresh_token", "authorization_code"):
        return _error("invalid_request", "Invalid grant_type")
    if (
        params.get("client_id") != portal.client_id
        or params.get("client_secret") != portal.client_secret
        or not portal.installed
    ):
        return _error("invalid_client", "Invalid client")
    if portal.faults.payment_required:
        return _error("PAYMENT_REQUIRED", "Payment required")
    if grant_type == "refresh_token":
        pair = portal.tokens.use_refresh(str(params.get("refresh_token", "")))
    else:
        pair = portal.tokens.use_code(str(params.get("code", "")))
    if pair is None:
        return _error("invalid_grant", "Invalid grant")
    return 200, portal.token_response(pair)


def _owner(portals: Sequence[FakePortal], params: dict[str, Any]) -> FakePortal:
    secret = str(params.get("refresh_token") or params.get("code") or "")
    for portal in portals:
        if secret in portal.tokens.refresh or secret in portal.tokens.codes:
            return portal
    return portals[0]


def oauth_app(portals: Callable[[], Sequence[FakePortal]]) -> Starlette:
    """The token server; with several portals the refresh token picks the portal."""

    async def token(request: Request) -> Response:
        params = parse_query(request.url.query)
        if request.method == "POST":
            params.update(parse_query((await request.body()).decode("utf-8", "replace")))
        portal = _owner(portals(), params)
        fault = portal.faults.take("oauth.token")
        if fault is not None and fault.kind != "timeout":
            return fault_response(fault.kind)
        status, body = grant(portal, params)
        if fault is not None:
            await anyio.sleep(fault.delay)
        return json_response(body, status)

    routes = [
        Route(path, token, methods=["GET", "POST"]) for path in ("/oauth/token/", "/oauth/token")
    ]
    return Starlette(routes=routes)


def server_host(server_endpoint: str) -> str:
    return urlsplit(server_endpoint).hostname or "oauth.bitrix.info"
