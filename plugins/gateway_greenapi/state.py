"""`stateInstance` -> `AccountState`, and the QR code as a data URL (spec 2.3).

GREEN's `stateInstanceChanged` webhook is known to go missing (`notAuthorized` after
`blocked`, forum #204), so the provider also polls `getStateInstance`; both end here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from gateway import AccountState, AccountStatus

_STATES: dict[str, tuple[AccountStatus, str | None]] = {
    "authorized": (AccountStatus.CONNECTED, None),
    "notAuthorized": (
        AccountStatus.NEEDS_QR,
        "notAuthorized: scan the QR code with WhatsApp on the phone (Linked devices)",
    ),
    "blocked": (AccountStatus.BANNED, "blocked: WhatsApp banned the number"),
    "yellowCard": (
        AccountStatus.BANNED,
        "yellowCard: WhatsApp suspended sending for suspected spam; messages wait in "
        "GREEN-API's queue for 24 h; reboot the instance once the suspension ends",
    ),
    "sleepMode": (
        AccountStatus.DISCONNECTED,
        "sleepMode: the phone is offline; switch it on and connect it to the internet",
    ),
    "starting": (AccountStatus.STARTING, "starting: the instance is (re)starting"),
    # Telegram/MAX flavours share the method; listed so they read sensibly if met.
    "pendingCode": (AccountStatus.NEEDS_QR, "pendingCode: enter the login code"),
    "pendingPassword": (AccountStatus.NEEDS_QR, "pendingPassword: enter the password"),
    "suspended": (AccountStatus.UNPAID, "suspended: the instance is suspended (payment?)"),
}


def account_state(state_instance: str, qr: str | None = None) -> AccountState:
    """The normalized state for a `stateInstance`; unknown values keep their name."""
    status, detail = _STATES.get(
        state_instance, (AccountStatus.UNKNOWN, f"unknown stateInstance {state_instance!r}")
    )
    return AccountState(status, detail=detail, qr=qr if status is AccountStatus.NEEDS_QR else None)


def qr_data_url(answer: Mapping[str, Any]) -> str | None:
    """`GET qr` answers `{"type": "qrCode", "message": "<base64 PNG>"}` while unlinked."""
    if answer.get("type") != "qrCode":
        return None
    message = answer.get("message")
    if not isinstance(message, str) or not message:
        return None
    if message.startswith("data:"):
        return message
    try:
        base64.b64decode(message, validate=True)
    except (binascii.Error, ValueError):
        return None
    return f"data:image/png;base64,{message}"
