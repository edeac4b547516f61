"""The 24-hour customer-service window, tracked per customer in durable state.

WhatsApp lets a business write freely only within 24 h of the customer's last message;
later it takes an approved template (error 131047). The time of each customer's newest
message (Meta's timestamp, so redelivered old webhooks cannot move it back) is kept under
`window:{wa_id}`. A customer with no record at all (wrote before the gateway existed, or
never) is "unknown": the send is tried and Meta's answer decides.
"""

from __future__ import annotations

from gateway import ProviderState

WINDOW_SECONDS = 24 * 3600.0
_PREFIX = "window:"


class WindowBook:
    def __init__(self, state: ProviderState) -> None:
        self.state = state

    async def last_inbound(self, wa_id: str) -> float | None:
        value = await self.state.get(_PREFIX + wa_id)
        if isinstance(value, dict):  # {"at": seconds, "id": wamid}
            value = value.get("at")
        return float(value) if isinstance(value, int | float) else None

    async def last_inbound_id(self, wa_id: str) -> str | None:
        """The wamid of the customer's newest message, when known (to mark it read)."""
        value = await self.state.get(_PREFIX + wa_id)
        found = value.get("id") if isinstance(value, dict) else None
        return found if isinstance(found, str) else None

    async def saw(self, wa_id: str, at: float, message_id: str | None = None) -> None:
        """Record a message the customer wrote at `at`, unless a newer one is known (one of
        the same second replaces it: it arrived later)."""
        known = await self.last_inbound(wa_id)
        if known is None or at >= known:
            await self.state.put(_PREFIX + wa_id, {"at": at, "id": message_id})

    @staticmethod
    def is_open(last: float | None, now: float) -> bool | None:
        """True/False when known, None when the customer never wrote to the gateway."""
        if last is None:
            return None
        return now - last < WINDOW_SECONDS
