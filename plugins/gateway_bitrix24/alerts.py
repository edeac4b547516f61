"""Alerts inside Bitrix24: a linked WhatsApp number stopped (or started again) working.

When a channel linked to one of a portal's open lines leaves *connected* (needs its QR code
scanned, disconnected, banned, unpaid), the chosen people of that portal get a Bitrix24
notification (`im.notify.system.add`, in the portal's language, tagged per number so the
newer replaces the older), and again when the number is connected again. Once per change:
the last state told is kept per portal and number in the shared store, under its lock, so
neither polls that repeat a state nor several gateway processes seeing the same change send
it twice. *Starting*, *error* and *unknown* states wait for a clearer one.

Who is told: the user ids set on the app's page, else the administrator who linked the
number (asked with `user.current` when linking). A portal whose tokens were refused cannot
be notified through its REST API at all: the app's page shows that as a banner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gateway import AccountState, AccountStatus, DeliveryError, Hub, ProviderState

from .forms import as_dict, as_int
from .pages import STATE_TEXTS
from .records import PortalRecord, PortalStore, parse_target
from .rest import RestClient
from .texts import PortalLanguages

log = logging.getLogger("gateway.bitrix24")

NOTIFY = "im.notify.system.add"
#: States that stop messages and need a person to act.
ALERTING = frozenset(
    {AccountStatus.NEEDS_QR, AccountStatus.DISCONNECTED, AccountStatus.BANNED, AccountStatus.UNPAID}
)
_TOLD = "alert:"
_LINKER = "linker:"
USERS_KEY = "alert_users"


def alert_users(record: PortalRecord) -> list[int]:
    """The user ids set on the app's page (`PortalRecord.extra["alert_users"]`)."""
    raw = record.extra.get(USERS_KEY)
    return [int(u) for u in raw if isinstance(u, int)] if isinstance(raw, list) else []


def parse_users(text: str) -> list[int] | None:
    """`"1, 27"` → [1, 27]; None when something is not a user id."""
    users: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or len(part) > 10:
            return None
        if int(part) not in users:
            users.append(int(part))
    return users


class Alerts:
    def __init__(
        self,
        *,
        instance: str,
        hub: Hub,
        rest: RestClient,
        store: PortalStore,
        state: ProviderState,
        languages: PortalLanguages,
    ) -> None:
        self.instance = instance
        self.hub = hub
        self.rest = rest
        self.store = store
        self.state = state
        self.languages = languages

    async def channel_changed(self, channel: str, state: AccountState) -> list[str]:
        """Tell each portal that links `channel`; the member_ids told."""
        told = []
        for member_id in await self._portals_of(channel):
            if await self._claim(member_id, channel, state.status):
                await self._notify(member_id, channel, state)
                told.append(member_id)
        return told

    async def remember_linker(self, record: PortalRecord, channel: str, auth_id: str) -> None:
        """Keep who linked `channel` (the default recipient of its alerts)."""
        try:
            user = as_int(
                as_dict(await self.rest.ask_as(record, "user.current", auth_id)).get("ID")
            )
        except DeliveryError as exc:
            log.info("who linked %s on %s is unknown: %s", channel, record.domain, exc)
            return
        if user is not None:
            await self.state.put(f"{_LINKER}{record.member_id}:{channel}", user)

    async def recipients(self, member_id: str, channel: str) -> list[int]:
        record = await self.store.get(member_id)
        chosen = alert_users(record) if record is not None else []
        if chosen:
            return chosen
        linker = await self.state.get(f"{_LINKER}{member_id}:{channel}")
        return [linker] if isinstance(linker, int) else []

    async def _portals_of(self, channel: str) -> list[str]:
        found: list[str] = []
        for route in await self.hub.routes():
            if route.crm != self.instance or route.channel != channel:
                continue
            parsed = parse_target(route.target)
            if parsed is not None and parsed[0] not in found:
                found.append(parsed[0])
        return found

    async def _claim(self, member_id: str, channel: str, status: AccountStatus) -> bool:
        """Whether this change is news for the portal (and mark it told)."""
        key = f"{_TOLD}{member_id}:{channel}"
        async with self.state.lock(key):
            last = await self.state.get(key)
            if status in ALERTING:
                news = last != status.value
            elif status is AccountStatus.CONNECTED:
                news = isinstance(last, str) and last != status.value
            else:
                return False
            if news:
                await self.state.put(key, status.value)
            return news

    async def _notify(self, member_id: str, channel: str, state: AccountState) -> None:
        t = await self.languages.translator(member_id)
        if state.status is AccountStatus.CONNECTED:
            text = t.gettext("alert.back", channel=channel)
        else:
            _, label, help_ = STATE_TEXTS[state.status]
            text = t.gettext(
                "alert.down", channel=channel, state=t.gettext(label), help=t.gettext(help_)
            )
        users = await self.recipients(member_id, channel)
        if not users:
            log.warning("no one to tell on %s that %s is %s", member_id, channel, state.status)
        await self._send(member_id, users, text, channel)

    async def _send(self, member_id: str, users: Iterable[int], text: str, channel: str) -> None:
        for user in users:
            params = {"USER_ID": user, "MESSAGE": text, "TAG": f"whatschat|{channel}"}
            try:
                await self.rest.call(member_id, NOTIFY, params)
            except DeliveryError as exc:
                # The banner on the settings page still shows it; the next change tries again.
                log.warning("could not notify user %s of %s: %s", user, member_id, exc)
