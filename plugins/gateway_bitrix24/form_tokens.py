"""Signed, expiring form tokens for the settings pages.

A token binds a page's forms to one portal, one line (0: the app page) and the `AUTH_ID`
of the user the page was shown to (kept only as a hash), for 30 minutes. The signing key is
made once and kept in the plugin's shared state, so every gateway process accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

from gateway import ProviderState

FORM_TTL = 1800.0


class FormTokens:
    """Signed, expiring tokens binding a settings form to one portal and line."""

    def __init__(self, state: ProviderState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self._secret: bytes | None = None

    async def _key(self) -> bytes:
        if self._secret is None:
            async with self.state.lock("form-secret"):
                stored = await self.state.get("form-secret")
                if not isinstance(stored, str):
                    stored = secrets.token_hex(32)
                    await self.state.put("form-secret", stored)
            self._secret = bytes.fromhex(stored)
        return self._secret

    async def issue(self, member_id: str, line: int, auth_id: str) -> str:
        payload = json.dumps(
            {"m": member_id, "l": line, "u": _session(auth_id), "e": int(self.clock() + FORM_TTL)}
        )
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        signature = hmac.new(await self._key(), encoded.encode(), hashlib.sha256).hexdigest()
        return f"{encoded}.{signature}"

    async def verify(self, token: str, auth_id: str) -> tuple[str, int] | None:
        """(member_id, line) of a valid, unexpired token issued with this `auth_id`."""
        encoded, _, signature = token.partition(".")
        expected = hmac.new(await self._key(), encoded.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        member_id, line, expires = data.get("m"), data.get("l"), data.get("e")
        if (
            not isinstance(member_id, str)
            or not isinstance(line, int)
            or not isinstance(expires, int)
            or not hmac.compare_digest(str(data.get("u")), _session(auth_id))
        ):
            return None
        if expires < self.clock():
            return None
        return member_id, line


def _session(auth_id: str) -> str:
    """What a form token keeps of the AUTH_ID it was issued with (never the token itself)."""
    return hashlib.sha256(b"b24-form|" + auth_id.encode()).hexdigest()[:32]
