"""Bitrix24 error codes (REST and OAuth) as the pipeline's delivery errors.

Temporary: the portal is busy or broken for now (503 QUERY_LIMIT_EXCEEDED, 429
OPERATION_TIME_LIMIT, 5xx, HTML error pages). Permanent: retrying the same request cannot
help (bad arguments, inactive line, missing scope). Some permanent codes also mean the
portal as a whole is unusable until an admin acts: those set a portal problem.
"""

from __future__ import annotations

import re

from gateway import DeliveryError, PermanentError, TemporaryError

from .records import NEEDS_REINSTALL, UNPAID

#: The access token is stale or unknown: refresh it once and repeat the call.
REFRESH_CODES = frozenset({"expired_token", "invalid_token", "NO_AUTH_FOUND"})

#: Code -> seconds to wait before retrying (None: the pipeline's backoff).
TEMPORARY_CODES: dict[str, float | None] = {
    "QUERY_LIMIT_EXCEEDED": 1.0,
    "OPERATION_TIME_LIMIT": 60.0,
    # A manual block by Bitrix24 support: retrying often only prolongs it.
    "OVERLOAD_LIMIT": 600.0,
    "INTERNAL_SERVER_ERROR": None,
    "ERROR_UNEXPECTED_ANSWER": None,
    "temporarily_unavailable": None,
}

#: Codes that leave the portal unusable until an admin reinstalls, pays or re-enables.
PORTAL_PROBLEMS: dict[str, tuple[str, str]] = {
    "invalid_grant": (
        NEEDS_REINSTALL,
        "the stored refresh token was refused (expired after long inactivity, or used "
        "elsewhere): reinstall the app in Bitrix24",
    ),
    "invalid_client": (
        NEEDS_REINSTALL,
        "the OAuth server refused client_id/client_secret, or the app was removed from the "
        "portal: check the settings, then reinstall the app",
    ),
    "WRONG_CLIENT": (NEEDS_REINSTALL, "the OAuth server does not know this app: reinstall it"),
    "ERROR_OAUTH": (NEEDS_REINSTALL, "the app is not installed on the portal: reinstall it"),
    "APPLICATION_NOT_FOUND": (NEEDS_REINSTALL, "the app is not installed on the portal"),
    "PORTAL_DELETED": (NEEDS_REINSTALL, "the portal was deleted"),
    "authorization_error": (
        NEEDS_REINSTALL,
        "the user who installed the app can no longer sign in (deactivated?): "
        "have an active admin reinstall the app",
    ),
    "PAYMENT_REQUIRED": (
        UNPAID,
        "the app's paid or trial period on the portal is over: renew it in Bitrix24 Market",
    ),
}

_SECRET_PARAMS = re.compile(
    r"(?i)\b(auth|access_token|refresh_token|client_secret|token|code)=[^&\s\"']*"
)


def scrub(text: str, limit: int = 300) -> str:
    """A portal's error text fit for logs and operators: no token values, bounded."""
    text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=…", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(
    code: str, description: str = "", *, status: int | None = None, retry_after: float | None = None
) -> DeliveryError:
    """The delivery error for a Bitrix24 error code (and HTTP status when known)."""
    text = scrub(description or code)
    if code in PORTAL_PROBLEMS:
        return PermanentError(f"{text}: {PORTAL_PROBLEMS[code][1]}", code=code)
    if code in TEMPORARY_CODES or (status is not None and (status >= 500 or status == 429)):
        wait = retry_after if retry_after is not None else TEMPORARY_CODES.get(code)
        return TemporaryError(text, code=code, retry_after=wait)
    if code == "NOT_ACTIVE_LINE":
        text += (
            ": the open line is off or was deleted, or the connector is not active on it; "
            "open the connector's settings in the Contact Center and link the line again"
        )
    elif code in ("insufficient_scope", "WRONG_AUTH_TYPE"):
        text += ": the app needs the imopenlines and imconnector scopes (check the app card)"
    elif code == "METHOD_CONFIRM_WAITING":
        text += ": an administrator must confirm the app's access to this method"
    return PermanentError(text, code=code)


def portal_problem(code: str | None) -> tuple[str, str] | None:
    """(problem, what to do) when `code` makes the whole portal unusable."""
    return PORTAL_PROBLEMS.get(code or "")
