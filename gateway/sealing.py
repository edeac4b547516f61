"""Instance state sealed at rest: `[store] encryption_key` encrypts what plugins keep.

Plugins keep their secrets in their key/value state (Bitrix24: each portal's OAuth tokens
and application token, the settings page's form-token key; providers' session data). With
`encryption_key` set, every value is written as `sealed:v1:<Fernet token>` (AES-128-CBC and
HMAC-SHA256, from the `cryptography` library), and read back with the current key or any of
`decryption_keys`. A value written in plain text before the key was set, or sealed with an
older key, is sealed with the current key when it is next written (a rewrite on read could
undo another process's newer write). Rotating:

1. generate a key: `python -c "from cryptography.fernet import Fernet;
   print(Fernet.generate_key().decode())"`;
2. set it as `encryption_key`, move the old one into `decryption_keys`, restart every process;
3. keep the old key listed while values sealed with it remain: the Bitrix24 plugin rewrites a
   portal's record at every token refresh (at least every `idle_refresh_days`); values written
   once (the settings page's form-token key) stay under the old key until rewritten.

A sealed value with no key that opens it is a `StoreError` naming the fix, never garbage
handed to a plugin.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.errors import StoreError
from gateway.models import JSON

PREFIX = "sealed:v1:"
GENERATE = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def valid_key(key: str) -> bool:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


class Sealer:
    """Seals values with the first key; opens them with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._current = Fernet(keys[0])
        self._any = MultiFernet([Fernet(key) for key in keys])

    def seal(self, value: JSON) -> str:
        return PREFIX + self._current.encrypt(orjson.dumps(value)).decode("ascii")

    def open(self, value: JSON) -> tuple[JSON, bool]:
        """(the plain value, whether it should be sealed again with the current key)."""
        if not is_sealed(value):
            return value, True
        token = str(value)[len(PREFIX) :].encode("ascii")
        try:
            return orjson.loads(self._current.decrypt(token)), False
        except InvalidToken:
            pass
        try:
            return orjson.loads(self._any.decrypt(token)), True
        except InvalidToken:
            raise StoreError(
                "a value in the store was sealed with a key that is neither "
                "[store] encryption_key nor one of decryption_keys: add the key it was "
                "written with to decryption_keys"
            ) from None


def is_sealed(value: JSON) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def unsealed(value: JSON) -> JSON:
    """A value read without any key: refuses sealed ones instead of passing them on."""
    if is_sealed(value):
        raise StoreError(
            "the store holds values sealed with [store] encryption_key, but none is set: "
            "set encryption_key (GATEWAY_STORE__ENCRYPTION_KEY) to the key they were written with"
        )
    return value
