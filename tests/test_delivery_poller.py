"""Idle delivery slots cost nothing: one poller per destination keeps the clock.

With a timer in every slot, a gateway with 1,000 channels (8 slots each) asked its store
for a claim and a due time 3,200 times a second while nothing happened, and made 8,000
claims before it could answer its first webhook.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio

SLOTS = 8
CRMS = 3


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "workers": {"poll_interval": 60.0, "concurrency": SLOTS},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "w"}
        },
        "crms": {
            f"crm{n}": {"provider": "test-crm", "base_url": f"http://crm{n}.test", "token": "t"}
            for n in range(CRMS)
        },
        "routes": {f"r{n}": {"channel": "wa", "crm": f"crm{n}"} for n in range(CRMS)},
    }


async def test_idle_slots_do_not_claim_and_each_destination_looks_once(tmp_path: Path) -> None:
    crms = [Recorder(name=f"crm{n}") for n in range(CRMS)]
    apps = {"channel.test": Recorder(name="channel").app}
    apps.update({f"crm{n}.test": crm.app for n, crm in enumerate(crms)})
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        deliverer = h.gateway.deliverer
        assert deliverer is not None
        store = h.gateway.store
        calls: Counter[str] = Counter()
        claim, next_due = store.claim, store.next_due

        async def counting_claim(destination: str, *args: Any) -> Any:
            calls["claim"] += 1
            return await claim(destination, *args)

        async def counting_next_due(destination: str, *args: Any) -> Any:
            calls["next_due"] += 1
            return await next_due(destination, *args)

        store.claim = counting_claim  # type: ignore[method-assign]
        store.next_due = counting_next_due  # type: ignore[method-assign]
        destinations = ["wa", *(f"crm{n}" for n in range(CRMS))]
        async with asyncio.timeout(10):  # every slot asleep, none having claimed
            while any(deliverer.idle_slots(d) < SLOTS for d in destinations):  # noqa: ASYNC110
                await asyncio.sleep(0)  # a yield, not a timed wait
        deliverer.wake()  # "look everywhere": each poller asks once
        async with asyncio.timeout(10):
            while calls["next_due"] < len(destinations):  # noqa: ASYNC110
                await asyncio.sleep(0)
        for _ in range(100):
            await asyncio.sleep(0)
        # No claim at all; one look per destination (two for a poller whose start-up look
        # came after the counting began), where a timer per slot made SLOTS per destination.
        assert calls["claim"] == 0
        assert len(destinations) <= calls["next_due"] <= 2 * len(destinations)

        # Work still wakes a slot at once, and only one claim per destination finds it.
        message = {"id": "m1", "chat": "c1", "from": "c1", "text": "hello"}
        response = await h.client.post(
            "/webhooks/wa", json={"messages": [message]}, headers={"Authorization": "Bearer w"}
        )
        assert response.json()["accepted"] == 1
        for crm in crms:
            await crm.wait_count(1)
        assert all(crm.texts() == ["hello"] for crm in crms)
