"""A faithful fake of Meta's WhatsApp Cloud API (graph.facebook.com) for tests and demos.

Mount `FakeCloudApi(...).app` under both `https://graph.facebook.com` and
`https://lookaside.fbsbx.com` (media download URLs point at the latter), drive customers with
`customer_writes`, statuses with `mark_*`, and push webhooks with `deliver_webhooks`.
Standalone: `python -m gateway_fakes.cloudapi --port 8030`.
"""

from __future__ import annotations

from .errors import (
    ERRORS,
    MAGIC_ECOSYSTEM_LIMITED,
    MAGIC_NUMBERS,
    MAGIC_PAIR_RATE,
    MAGIC_SERVER_ERROR,
    MAGIC_SPAM_LIMITED,
    MAGIC_THROUGHPUT,
    MAGIC_UNDELIVERABLE,
    MAGIC_WINDOW_CLOSED,
    GraphError,
)
from .ids import FakeClock, SkewClock
from .payloads import encode, signature
from .server import FakeCloudApi
from .state import (
    TRANSITIONS,
    Call,
    Delivery,
    InboundMessage,
    Media,
    PhoneState,
    ReadReceipt,
    SentMessage,
    Template,
)

__all__ = [
    "ERRORS",
    "MAGIC_ECOSYSTEM_LIMITED",
    "MAGIC_NUMBERS",
    "MAGIC_PAIR_RATE",
    "MAGIC_SERVER_ERROR",
    "MAGIC_SPAM_LIMITED",
    "MAGIC_THROUGHPUT",
    "MAGIC_UNDELIVERABLE",
    "MAGIC_WINDOW_CLOSED",
    "TRANSITIONS",
    "Call",
    "Delivery",
    "FakeClock",
    "FakeCloudApi",
    "GraphError",
    "InboundMessage",
    "Media",
    "PhoneState",
    "ReadReceipt",
    "SentMessage",
    "SkewClock",
    "Template",
    "encode",
    "signature",
]
