"""Graph API errors as Meta shapes them, and the magic recipients that trigger them.

Titles and details follow Meta's error-code table (spec section 3.6); the HTTP statuses are the
ones that table lists, but a plugin must branch on `code`, never on the status or the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    http_status: int
    title: str
    details: str
    # WhatsApp-specific codes carry `error_data`; plain Graph ones (auth, unknown node) do not.
    whatsapp: bool = True
    type: str = "OAuthException"


ERRORS: dict[int, ErrorInfo] = {
    2: ErrorInfo(503, "Service temporarily unavailable", "Service temporarily unavailable"),
    4: ErrorInfo(400, "Application request limit reached", "Too many API calls from this app"),
    100: ErrorInfo(400, "Invalid parameter", "Invalid parameter"),
    104: ErrorInfo(
        400, "An access token is required to request this resource.", "", whatsapp=False
    ),
    190: ErrorInfo(
        401, "Invalid OAuth access token - Cannot parse access token", "", whatsapp=False
    ),
    368: ErrorInfo(
        403,
        "Temporarily blocked for policies violations",
        "The phone number is restricted from sending business-initiated messages.",
    ),
    80007: ErrorInfo(400, "Rate limit issues", "The WhatsApp Business Account reached its limit."),
    130429: ErrorInfo(400, "Rate limit hit", "Cloud API message throughput has been reached."),
    131000: ErrorInfo(500, "Something went wrong", "Something went wrong"),
    131008: ErrorInfo(400, "Required parameter is missing", "Required parameter is missing"),
    131009: ErrorInfo(400, "Parameter value is not valid", "Parameter value is not valid"),
    131026: ErrorInfo(
        400,
        "Message Undeliverable.",
        "Unable to deliver message. Reasons can include: the recipient phone number is not a "
        "WhatsApp phone number; the recipient has not accepted the terms of service; the "
        "recipient is using an old WhatsApp version.",
    ),
    131031: ErrorInfo(
        400, "Business Account locked", "The WhatsApp Business Account has been locked."
    ),
    131047: ErrorInfo(
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    131048: ErrorInfo(
        400,
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be "
        "sent from this phone number.",
    ),
    131049: ErrorInfo(
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131051: ErrorInfo(400, "Message type unknown", "Message type is currently not supported."),
    131053: ErrorInfo(400, "Media upload error", "Unable to upload the media used in the message."),
    131056: ErrorInfo(
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    132000: ErrorInfo(
        400,
        "Number of parameters does not match the expected number of params",
        "body: number of localizable_params does not match the expected number of params",
    ),
    132001: ErrorInfo(
        404,
        "Template name does not exist in the translation",
        "template name does not exist in the translation",
    ),
    132015: ErrorInfo(400, "Template is Paused", "Template is paused due to low quality."),
    132016: ErrorInfo(400, "Template is Disabled", "Template has been permanently disabled."),
    133010: ErrorInfo(400, "Account not registered", "The phone number is not registered."),
}

# Recipients that always fail, named after the code: "1555" + "0" + the six-digit code keeps
# them valid-looking 11-digit US numbers that no real customer has (555-01xx is reserved).
MAGIC_THROUGHPUT = "15550130429"
MAGIC_SERVER_ERROR = "15550131000"
MAGIC_UNDELIVERABLE = "15550131026"
MAGIC_WINDOW_CLOSED = "15550131047"
MAGIC_SPAM_LIMITED = "15550131048"
MAGIC_ECOSYSTEM_LIMITED = "15550131049"
MAGIC_PAIR_RATE = "15550131056"

MAGIC_NUMBERS: dict[str, int] = {
    MAGIC_THROUGHPUT: 130429,
    MAGIC_SERVER_ERROR: 131000,
    MAGIC_UNDELIVERABLE: 131026,
    MAGIC_WINDOW_CLOSED: 131047,
    MAGIC_SPAM_LIMITED: 131048,
    MAGIC_ECOSYSTEM_LIMITED: 131049,
    MAGIC_PAIR_RATE: 131056,
}

# Delivery failures Meta often reports only later, as a `failed` status, after having
# accepted the send; `error_delivery = "webhook"` reproduces that path for these codes.
ASYNC_CAPABLE = frozenset({131026, 131047, 131048, 131049})


class GraphError(Exception):
    """A Graph API error response; raised inside handlers, rendered by the app."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        details: str | None = None,
        http_status: int | None = None,
        subcode: int | None = None,
        type: str | None = None,
        whatsapp: bool | None = None,
    ) -> None:
        info = ERRORS.get(code, ErrorInfo(400, "Unknown error", "Unknown error"))
        self.code = code
        self.info = info
        self.message = message or (f"(#{code}) {info.title}" if info.whatsapp else info.title)
        self.details = info.details if details is None else details
        self.http_status = http_status or info.http_status
        self.subcode = subcode
        self.type = type or info.type
        # Graph-level failures (unknown node or field, bad path) carry no `error_data`.
        self.whatsapp = info.whatsapp if whatsapp is None else whatsapp
        super().__init__(self.message)

    def envelope(self, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.whatsapp:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def param_error(message: str, code: int = 100) -> GraphError:
    """A `(#100) ...` validation error with Graph's own wording in `message`."""
    return GraphError(code, f"(#{code}) {message}", details=message)


def unknown_node(node_id: str, method: str) -> GraphError:
    verb = "get" if method == "GET" else method.lower()
    return GraphError(
        100,
        f"Unsupported {verb} request. Object with ID '{node_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation. Please read "
        "the Graph API documentation at https://developers.facebook.com/docs/graph-api",
        subcode=33,
        type="GraphMethodException",
        whatsapp=False,
    )


def status_error(code: int, details: str | None = None) -> dict[str, Any]:
    """The `errors[]` item of a `failed` status or an out-of-band `value.errors[]`."""
    info = ERRORS.get(code, ErrorInfo(400, "Unknown error", "Unknown error"))
    return {
        "code": code,
        "title": info.title,
        "message": info.title,
        "error_data": {"details": details or info.details},
        "href": ERROR_HREF,
    }
