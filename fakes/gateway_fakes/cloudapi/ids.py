"""Deterministic ids and clocks for the fake Cloud API.

Every id comes from a counter so two runs of the same test produce byte-identical webhooks and
responses; the shapes imitate Meta's so parsers written against the fake accept real traffic.
"""

from __future__ import annotations

import base64
import hashlib
import time

# Meta's outbound wamid is base64 of a small protobuf-like record: peer wa_id, a direction
# marker (0x11 sent by the business, 0x12 received from the user) and the WhatsApp message key.
# Reproducing the layout keeps ids the same length and alphabet as production ones.
_OUTBOUND = 0x11
_INBOUND = 0x12

# Media ids on Graph are 15-17 digit numbers; start high enough to look like one.
_MEDIA_ID_BASE = 1_038_520_000_000_000


def wamid(wa_id: str, key: str, *, inbound: bool) -> str:
    """A `wamid.` id in Meta's encoding for a message with key `key` in chat `wa_id`."""
    peer = wa_id.encode()
    raw_key = key.encode()
    raw = (
        b"\x1c\x18"
        + bytes([len(peer)])
        + peer
        + b"\x15\x02\x00"
        + bytes([_INBOUND if inbound else _OUTBOUND])
        + b"\x18"
        + bytes([len(raw_key)])
        + raw_key
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


class IdFactory:
    """Counter-based ids; `seed` (the phone number id) keeps two fakes' ids apart."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.counter = 0

    def _next_hex(self, label: str) -> str:
        self.counter += 1
        return hashlib.sha256(f"{self.seed}:{label}:{self.counter}".encode()).hexdigest()

    def outbound(self, wa_id: str) -> str:
        return wamid(wa_id, self._next_hex("out")[:18].upper(), inbound=False)

    def inbound(self, wa_id: str) -> str:
        return wamid(wa_id, "3A" + self._next_hex("in")[:18].upper(), inbound=True)

    def media(self) -> str:
        self.counter += 1
        return str(_MEDIA_ID_BASE + self.counter)

    def fbtrace(self) -> str:
        digest = bytes.fromhex(self._next_hex("trace"))[:8]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def conversation(self) -> str:
        return self._next_hex("conversation")[:32]

    def token(self) -> str:
        return self._next_hex("token")[:40]

    def challenge(self) -> str:
        # Meta's challenges are decimal strings; a gateway that int()s them must still work.
        return str(int(self._next_hex("challenge")[:8], 16))


class FakeClock:
    """A frozen clock that moves only when a test calls `advance`."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class SkewClock:
    """Wall time plus an offset, so a standalone fake can still jump ahead ("24 h later")."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        self.offset += seconds
        return self()
