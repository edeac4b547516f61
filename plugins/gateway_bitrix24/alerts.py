"""Alerts inside Bitrix24: a linked WhatsApp number stopped (or started again) working.

When a channel linked to one of a portal's open lines leaves *connected* (needs its QR code
scanned, disconnected, banned, unpaid), the chosen people of that portal get a Bitrix24
notification (`im.notify.system.add`, in the portal's language, tagged per number so the
newer replaces the older), and again when the number is connected again. Once per change:
the last state told is kept per portal and number in the shared store, under its lock, so
neither polls that repeat a state nor several gateway processes seeing the same change send
it twice. *Starting*, *error* and *unknown* states wait for a clearer one.

Who is told: the user ids set on the app's page, else the administrator who linked the
number (asked with `user.current` when linking).

A portal whose tokens were refused (the app must be reinstalled, or paid for) cannot be
notified through its REST API while that lasts: every call would be refused too. The
settings and app pages show it as a banner, and since when is kept; once the portal works
again (a reinstall) the same people are told what happened, once (`portal_refused`,
`portal_back`), tagged `whatschat|portal`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from gateway import AccountState, AccountStatus, DeliveryError, Hub, ProviderState

from .forms import as_dict, as_int
from .line_page import number_label
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
_PORTAL = "*portal*"
_NUMBER = "number:"
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.hub = hub
        self.rest = rest
        self.store = store
        self.state = state
        self.languages = languages
        self.clock = clock

    async def channel_changed(self, channel: str, state: AccountState) -> list[str]:
        """Tell each portal that links `channel`; the member_ids told."""
        told = []
        for member_id in await self._portals_of(channel):
            if await self._claim(member_id, channel, state.status):
                await self._notify(member_id, channel, state)
                told.append(member_id)
        return told

    async def portal_refused(self, record: PortalRecord) -> None:
        """Bitrix24 refused the portal's tokens: keep since when, for `portal_back`.

        Nobody can be told through this portal's REST API now; its pages show a banner."""
        key = f"{_TOLD}{record.member_id}:{_PORTAL}"
        async with self.state.lock(key):
            if isinstance(await self.state.get(key), dict):
                return  # already known: the first refusal's time stays
            await self.state.put(key, {"problem": record.problem, "since": self.clock()})
        log.warning("portal %s refused the gateway's tokens: told once it works", record.domain)

    async def portal_back(self, member_id: str) -> bool:
        """The portal works again (reinstalled): tell the chosen people what happened, once."""
        key = f"{_TOLD}{member_id}:{_PORTAL}"
        async with self.state.lock(key):
            refused = await self.state.get(key)
            if not isinstance(refused, dict):
                return False
            await self.state.delete(key)
        t = await self.languages.translator(member_id)
        since = refused.get("since")
        moment = float(since) if isinstance(since, int | float) else self.clock()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))
        try:
            status = AccountStatus(str(refused.get("problem")))
        except ValueError:
            status = AccountStatus.NEEDS_REINSTALL
        label = t.gettext(STATE_TEXTS.get(status, STATE_TEXTS[AccountStatus.NEEDS_REINSTALL])[1])
        text = t.gettext("alert.portal_back", since=when, state=label)
        users = await self._portal_recipients(member_id)
        if not users:
            log.warning("no one to tell on %s that the gateway works again", member_id)
        await self._send(member_id, users, text, "portal")
        return True

    async def _portal_recipients(self, member_id: str) -> list[int]:
        """The users set on the app's page, else whoever linked any of its numbers."""
        record = await self.store.get(member_id)
        chosen = alert_users(record) if record is not None else []
        if chosen:
            return chosen
        users: list[int] = []
        for route in await self.hub.routes():
            parsed = parse_target(route.target) if route.crm == self.instance else None
            if parsed is None or parsed[0] != member_id:
                continue
            linker = await self.state.get(f"{_LINKER}{member_id}:{route.channel}")
            if isinstance(linker, int) and linker not in users:
                users.append(linker)
        return users

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

    async def _label(self, channel: str, state: AccountState) -> str:
        """The number as people know it: its phone and name, remembered from when the
        provider told them (a number that needs its QR scanned may no longer say)."""
        label = number_label(channel, state)
        key = f"{_NUMBER}{channel}"
        if label != channel:
            await self.state.put(key, label)
            return label
        known = await self.state.get(key)
        return known if isinstance(known, str) else channel

    async def _notify(self, member_id: str, channel: str, state: AccountState) -> None:
        t = await self.languages.translator(member_id)
        number = await self._label(channel, state)
        if state.status is AccountStatus.CONNECTED:
            text = t.gettext("alert.back", channel=number)
        else:
            _, label, help_ = STATE_TEXTS[state.status]
            text = t.gettext(
                "alert.down", channel=number, state=t.gettext(label), help=t.gettext(help_)
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
