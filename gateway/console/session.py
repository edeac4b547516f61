"""Console sign-in: the admin token once, then a signed session cookie and CSRF tokens.

Stateless across processes: the cookie is `<payload>.<hmac>` signed with a key derived from
the admin token, so every gateway process sharing the settings accepts it, and changing the
token signs everyone out. Signing out records the session's nonce in the store (namespace
`console.signed_out`), so a copied cookie dies with the sign-out in every process too.

Every form carries a CSRF token (HMAC of the session nonce); htmx sends it as a header.
The cookie is HttpOnly, SameSite=Strict, and Secure when `public_url` is https.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

COOKIE = "gateway_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: A session lasts a working day; then the token is asked for again.
LIFETIME = 12 * 3600.0
REVOKED = "console.signed_out"


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires: float


def _key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), b"whatschat console session v1", hashlib.sha256).digest()


def _sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def token_matches(given: str, admin_token: str | None) -> bool:
    """Whether `given` is the admin token (compared in constant time)."""
    return (
        bool(admin_token)
        and bool(given)
        and hmac.compare_digest(given.encode(), str(admin_token).encode())
    )


def new_cookie(admin_token: str, now: float) -> tuple[str, Session]:
    session = Session(secrets.token_urlsafe(16), now + LIFETIME)
    payload = json.dumps({"n": session.nonce, "e": session.expires}).encode()
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{encoded}.{_sign(_key(admin_token), encoded.encode())}", session


def read_cookie(value: str | None, admin_token: str | None, now: float) -> Session | None:
    """The session a cookie holds, or None if it is missing, forged, stale or for another
    token. (Whether it was signed out is the store's to say; see `REVOKED`.)"""
    if not value or not admin_token or "." not in value:
        return None
    encoded, _, signature = value.rpartition(".")
    expected = _sign(_key(admin_token), encoded.encode())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        session = Session(str(data["n"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None


def csrf_token(admin_token: str, session: Session) -> str:
    return _sign(_key(admin_token), f"csrf:{session.nonce}".encode())


def csrf_matches(given: str | None, admin_token: str, session: Session) -> bool:
    return bool(given) and hmac.compare_digest(
        str(given).encode(), csrf_token(admin_token, session).encode()
    )
