"""Graph API failures -> the gateway's delivery errors.

Branch on Meta's numeric `code` (spec section 3.6), never on the HTTP status or the wording;
the status only decides for answers without a Graph error body (a proxy's HTML page).
The provider's code and words are kept in the error so the operator sees them verbatim.
"""

from __future__ import annotations

import re
from typing import Any

from gateway import DeliveryError, PermanentError, TemporaryError

WINDOW_CLOSED = "131047"
WINDOW_TEXT = (
    "the customer has not written in 24 hours; WhatsApp only allows a template message now"
)

# Worth retrying later: throttling, Meta-side hiccups, media fetch problems.
TEMPORARY_CODES = frozenset(
    {1, 2, 4, 17, 341, 80007, 130429, 131000, 131016, 131053, 131056, 133004}
)
# Seconds to wait for the rate limits, when Meta gives no Retry-After.
RETRY_AFTER = {4: 60.0, 80007: 60.0, 130429: 1.0, 131056: 6.0}

# What the operator should understand; Meta's own words follow in brackets.
EXPLANATIONS = {
    0: "WhatsApp refused the access token; set a valid system-user token",
    3: "the app lacks the permission for this call",
    10: "the access token lacks the whatsapp_business_messaging permission",
    100: "WhatsApp refused a parameter of the message",
    190: "the access token is invalid or expired; set a new system-user token",
    368: "the number is temporarily blocked for policy violations",
    131026: "WhatsApp cannot deliver to this number (no WhatsApp, an old app, or it blocked "
    "business messages)",
    131031: "the WhatsApp Business Account is locked",
    131047: WINDOW_TEXT,
    131048: "WhatsApp limits this number for spam reports; sending is paused",
    131049: "WhatsApp chose not to deliver this message to keep engagement healthy",
    131051: "WhatsApp does not support this message type",
    133010: "the business phone number is not registered with the Cloud API",
}

_SECRETS = re.compile(r"((?:access_)?token=)[^&\s\"']+", re.IGNORECASE)


def scrub(text: str, *secrets: str) -> str:
    """`text` without `token=` query values or any of `secrets`."""
    text = _SECRETS.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def graph_error(
    status: int, body: Any, retry_after: str | None = None, *, secrets: tuple[str, ...] = ()
) -> DeliveryError:
    """The delivery error for a non-2xx Graph answer with JSON (or other) `body`."""
    error = body.get("error") if isinstance(body, dict) else None
    wait = _seconds(retry_after)
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        text = f"HTTP {status} from the Cloud API"
        if status == 429 or status >= 500:
            return TemporaryError(text, code=str(status), retry_after=wait)
        return PermanentError(text, code=str(status))
    code: int = error["code"]
    text = scrub(describe(code, error), *secrets)
    if code in TEMPORARY_CODES or (status >= 500 and code not in EXPLANATIONS):
        return TemporaryError(text, code=str(code), retry_after=wait or RETRY_AFTER.get(code))
    return PermanentError(text, code=str(code))


def describe(code: int, error: dict[str, Any]) -> str:
    """A readable text: our explanation (if any) then Meta's message and details."""
    message = str(error.get("message") or error.get("title") or "").strip()
    data = error.get("error_data")
    details = str(data.get("details") or "").strip() if isinstance(data, dict) else ""
    meta = message
    if details and details not in message:
        meta = f"{message}: {details}" if message else details
    explanation = EXPLANATIONS.get(code)
    if explanation is None:
        return meta or f"Cloud API error {code}"
    return f"{explanation} [WhatsApp: {meta}]" if meta else explanation


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
