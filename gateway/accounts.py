"""Account states: the last known state of every instance, shared through the store.

Every process reads the states in the store (`gateway status` too): a change is written
there and announced (`bump("accounts")`), and shown here at once (metrics, an
`account_state` observation when the status changed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

from gateway.metrics import Metrics, record_account_state
from gateway.models import JSON, AccountState, AccountStatus
from gateway.notify import Notifier
from gateway.observe import Observation
from gateway.store.base import Store

# Where account states live in the store: every process reads them there.
ACCOUNTS = "accounts"

log = logging.getLogger("gateway")

#: Told of a status change this process learnt first: (instance, new state).
Watcher = Callable[[str, AccountState], Awaitable[None]]


class AccountStates:
    """The account state of each instance, as this process last saw or heard it."""

    def __init__(self, store: Store, metrics: Metrics, notifier: Notifier) -> None:
        self._store = store
        self._metrics = metrics
        self._notifier = notifier
        self._states: dict[str, AccountState] = {}
        # When each state shown here was learnt (ns since the epoch): a read of the store
        # that raced a newer change must not show the older state again.
        self._learnt: dict[str, int] = {}
        self._watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """Call `watcher` when an instance's status changes as this process learns it
        (other processes may learn the same change: watchers deduplicate)."""
        self._watchers.append(watcher)

    def last(self, instance: str) -> AccountState | None:
        """The last state `instance` reported or was asked for; None if never."""
        return self._states.get(instance)

    async def set(self, instance: str, state: AccountState) -> None:
        """Record `instance`'s state here and, when it changed, in the store for all."""
        previous = self._states.get(instance)
        learnt = time.time_ns()
        self._learnt[instance] = learnt
        self.show(instance, state)
        if previous != state:
            await self._store.kv_put(ACCOUNTS, instance, state_json(state, learnt))
            await self._store.bump([ACCOUNTS])
        if previous is None or previous.status != state.status:
            for watcher in self._watchers:
                try:
                    await watcher(instance, state)
                except Exception:
                    log.exception("a watcher of %s's state failed", instance)

    def show(self, instance: str, state: AccountState) -> None:
        """Take `state` as current here (metrics; an observation when the status changed)."""
        previous = self._states.get(instance)
        self._states[instance] = state
        record_account_state(self._metrics, instance, state.status)
        if previous is None or previous.status != state.status:
            self._notifier.notify(
                Observation(
                    "account_state",
                    instance,
                    detail={"state": state.status.value, "detail": state.detail or ""},
                )
            )

    async def load(self, instances: Collection[str]) -> None:
        """Show the states other processes wrote for `instances`."""
        for instance, value in await self._store.kv_items(ACCOUNTS):
            state = state_from_json(value)
            if instance not in instances or state is None:
                continue
            learnt = learnt_at(value)
            if learnt < self._learnt.get(instance, -1):
                continue  # this process learnt a newer state while the store was read
            self._learnt[instance] = learnt
            self.show(instance, state)


def state_json(state: AccountState, learnt: int) -> JSON:
    data: dict[str, JSON] = {"status": state.status.value, "detail": state.detail}
    if state.phone:
        data["phone"] = state.phone
    if state.name:
        data["name"] = state.name
    data["learnt"] = learnt
    return data


def learnt_at(value: JSON) -> int:
    """When a stored state was learnt (0 for a state an older release wrote)."""
    learnt = value.get("learnt") if isinstance(value, dict) else None
    return learnt if isinstance(learnt, int) and not isinstance(learnt, bool) else 0


def state_from_json(value: JSON) -> AccountState | None:
    if not isinstance(value, dict):
        return None
    try:
        status = AccountStatus(str(value.get("status")))
    except ValueError:
        return None
    detail, phone, name = (value.get(key) for key in ("detail", "phone", "name"))
    return AccountState(
        status,
        detail if isinstance(detail, str) else None,
        phone=phone if isinstance(phone, str) else None,
        name=name if isinstance(name, str) else None,
    )
