"""Account states shared through the store: a read that raced a newer change is not shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.accounts import ACCOUNTS
from gateway.models import AccountState, AccountStatus
from gateway.testing import running_gateway

pytestmark = pytest.mark.anyio


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
    }


async def test_a_store_read_older_than_the_state_shown_does_not_flip_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(settings(tmp_path)) as h:
        accounts, store = h.gateway.accounts, h.gateway.store
        await accounts.set("wa", AccountState(AccountStatus.CONNECTED))
        before = await store.kv_items(ACCOUNTS)  # a reload reads this...
        await accounts.set("wa", AccountState(AccountStatus.BANNED))  # ...while this lands

        async def stale(namespace: str) -> Any:
            return before

        monkeypatch.setattr(store, "kv_items", stale)
        await accounts.load(["wa"])
        monkeypatch.undo()
        last = accounts.last("wa")
        assert last is not None and last.status is AccountStatus.BANNED
        states = [o.detail["state"] for o in h.observer.of_type("account_state")]
        assert states[-1] == "banned"

        # another process's newer change is still taken
        await accounts.set("wa", AccountState(AccountStatus.BANNED))
        other = {"status": "connected", "detail": None, "learnt": 2**62}
        await store.kv_put(ACCOUNTS, "wa", other)
        await accounts.load(["wa"])
        last = accounts.last("wa")
        assert last is not None and last.status is AccountStatus.CONNECTED
