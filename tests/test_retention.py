"""Events (and their dedupe keys) are kept for `store.keep_events_days`, then forgotten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.settings import settings_from_mapping
from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": "Bearer t"}


def settings(tmp_path: Path, **store: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", **store},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "c"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store\.keep_events_days"):
        settings_from_mapping(settings(tmp_path, keep_events_days=0))


async def test_housekeeping_forgets_events_past_retention(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    recorder = Recorder()
    apps = {"channel.test": recorder.app, "crm.test": recorder.app}
    body = {"messages": [{"id": "m1", "chat": "c1", "text": "hi"}]}
    config = settings(tmp_path, keep_events_days=2)
    async with running_gateway(config, apps=apps, clock=lambda: now[0]) as h:
        assert (await h.client.post("/webhooks/wa", json=body, headers=AUTH)).json()["accepted"]
        await h.gateway.housekeep()
        again = await h.client.post("/webhooks/wa", json=body, headers=AUTH)
        assert again.json()["duplicates"] == 1  # within retention: still a duplicate
        now[0] += 3 * 86400
        await h.gateway.housekeep()
        later = await h.client.post("/webhooks/wa", json=body, headers=AUTH)
        assert later.json()["accepted"] == 1  # past retention the key is forgotten
