"""History on link in the core (`gateway.history`): durable, capped, live traffic first,
each message once. The providers' own histories are tested with their fakes
(tests/test_history_e2e.py, tests/test_greenapi_e2e.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway import Capabilities, InboundEvent, Message, Provider, Route, Sender, hookimpl
from gateway.history import NAMESPACE
from gateway.testing import Recorder, running_gateway
from gateway.testing.providers import RecordingChannel

pytestmark = pytest.mark.anyio

DAY = 86_400.0
CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}


class KeepsHistory(RecordingChannel):
    """The test channel with a history: `kept` messages, `asked` the `since` of each call."""

    name: ClassVar[str] = "history-channel"
    capabilities = Capabilities(edits=True, deletes=True, history=True)
    kept: ClassVar[list[InboundEvent]] = []
    asked: ClassVar[list[float]] = []

    async def history(self, since: float) -> list[InboundEvent]:
        self.asked.append(since)
        return [e for e in self.kept if (getattr(e.event, "timestamp", 0) or 0) >= since]


class Plugin:
    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(KeepsHistory)


def said(chat: str, number: int, days_ago: float) -> InboundEvent:
    """A message as the test channel's webhook makes it (key `msg:{id}`)."""
    message = Message(
        conversation_id=chat,
        native_id=f"{chat}-{number}",
        sender=Sender(id=chat),
        text=f"{chat} #{number}",
        timestamp=time.time() - days_ago * DAY,
    )
    return InboundEvent(f"msg:{message.native_id}", message)


@pytest.fixture(autouse=True)
def history() -> None:
    KeepsHistory.kept = [
        said("ivan", 1, 6.0),
        *[said("ivan", n, 2.0 - n / 100) for n in range(2, 32)],
        *[said("olga", n, 1.0 - n / 100) for n in range(1, 12)],
    ]
    KeepsHistory.asked = []


def settings(tmp_path: Path, **history: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", "keep_events_days": 5},
        "media": {"directory": str(tmp_path / "media")},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        "workers": {"poll_interval": 0.02, "concurrency": 2},
        "history": {"messages_per_second": 0, **history},
        "channels": {
            "wa": {"provider": "history-channel", "base_url": "http://wa.test", "token": "wa-token"}
        },
        "crms": {
            "crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "crm-token"}
        },
    }


async def test_the_last_days_arrive_once_in_order(tmp_path: Path) -> None:
    crm = Recorder(name="crm", dedupe=False)
    apps = {"crm.test": crm.app, "wa.test": Recorder(name="wa").app}
    async with running_gateway(settings(tmp_path, max_queue=3), apps=apps, plugins=[Plugin()]) as h:
        # One of them was delivered before (by webhook): it is not delivered again.
        await h.gateway.hub.add_route(Route("linked", "wa", "crm"))
        response = await h.client.post(
            "/webhooks/wa",
            json={"messages": [{"id": "olga-5", "chat": "olga", "text": "olga #5"}]},
            headers=CHANNEL_AUTH,
        )
        assert response.status_code == 200
        await crm.wait_count(1)
        assert await h.gateway.hub.import_history("linked", 3)
        await h.gateway.history.wait()
        await crm.wait_count(41)
    [since] = KeepsHistory.asked
    assert time.time() - 3 * DAY - 60 < since < time.time() - 3 * DAY + 60
    ivan = [r.text for r in crm.received if r.conversation == "ivan"]
    olga = [r.text for r in crm.received if r.conversation == "olga"]
    assert ivan == [f"ivan #{n}" for n in range(2, 32)]  # not #1, six days old
    assert olga == ["olga #5"] + [f"olga #{n}" for n in range(1, 12) if n != 5]
    assert len(crm.received) == 41


async def test_days_are_capped_and_off_by_default(tmp_path: Path) -> None:
    apps = {"crm.test": Recorder(name="crm").app, "wa.test": Recorder(name="wa").app}
    async with running_gateway(settings(tmp_path), apps=apps, plugins=[Plugin()]) as h:
        hub = h.gateway.hub
        await hub.add_route(Route("linked", "wa", "crm"))
        assert hub.history_days() == 0
        assert await hub.import_history("linked") is False  # [history] days = 0
        assert await hub.import_history("linked", 0) is False
        assert KeepsHistory.asked == []
        # 100 days asked; [store] keep_events_days = 5 remembers what was delivered: 5.
        assert await hub.import_history("linked", 100)
        await h.gateway.history.wait()
        assert await h.gateway.store.kv_items(NAMESPACE) == []
        with pytest.raises(ValueError, match="no route"):
            await hub.import_history("nowhere", 1)
    [since] = KeepsHistory.asked
    assert abs(since - (time.time() - 5 * DAY)) < 60


async def test_an_unfinished_import_resumes_at_the_next_start(tmp_path: Path) -> None:
    crm = Recorder(name="crm", dedupe=False)
    apps = {"crm.test": crm.app, "wa.test": Recorder(name="wa").app}
    config = settings(tmp_path, days=2)
    config["routes"] = {"linked": {"channel": "wa", "crm": "crm"}}
    async with running_gateway(config, apps=apps, plugins=[Plugin()]) as h:
        assert h.gateway.hub.history_days() == 2
        # As left by a process that died after the request was written.
        since = time.time() - 2 * DAY
        record = {"channel": "wa", "since": since, "days": 2}
        await h.gateway.store.kv_put(NAMESPACE, "linked", record)
    async with running_gateway(config, apps=apps, plugins=[Plugin()]) as h:
        await h.gateway.history.wait()
        await crm.wait_count(41)
        assert await h.gateway.store.kv_items(NAMESPACE) == []


async def test_a_provider_without_history_imports_nothing(tmp_path: Path) -> None:
    config = settings(tmp_path, days=3)
    config["channels"]["wa"]["provider"] = "test-channel"
    apps = {"crm.test": Recorder(name="crm").app, "wa.test": Recorder(name="wa").app}
    async with running_gateway(config, apps=apps) as h:
        await h.gateway.hub.add_route(Route("linked", "wa", "crm"))
        assert await h.gateway.hub.import_history("linked") is False
        assert await h.gateway.store.kv_items(NAMESPACE) == []


async def test_live_messages_overtake_an_import(tmp_path: Path) -> None:
    """While the CRM is busy with imported messages, the import waits and a customer who
    writes now is delivered first."""
    crm = Recorder(name="crm", dedupe=False)
    release = crm.hold(lambda item: str(item.get("text", "")).startswith("ivan"))
    apps = {"crm.test": crm.app, "wa.test": Recorder(name="wa").app}
    async with running_gateway(settings(tmp_path, max_queue=1), apps=apps, plugins=[Plugin()]) as h:
        await h.gateway.hub.add_route(Route("linked", "wa", "crm"))
        assert await h.gateway.hub.import_history("linked", 3)
        await crm.holding.wait()  # the first imported message is at the CRM, held there
        response = await h.client.post(
            "/webhooks/wa",
            json={"messages": [{"id": "pavel-1", "chat": "pavel", "text": "I need help now"}]},
            headers=CHANNEL_AUTH,
        )
        assert response.status_code == 200
        await crm.wait_count(1)
        assert crm.texts() == ["I need help now"]
        # The import fed one chunk and waits for the CRM's queue to drain.
        record = await h.gateway.store.kv_get(NAMESPACE, "linked")
        assert isinstance(record, dict) and record["fed"] == 20
        release.set()
        await h.gateway.history.wait()
        await crm.wait_count(42)
    assert crm.texts("ivan") == [f"ivan #{n}" for n in range(2, 32)]
    assert crm.texts("olga") == [f"olga #{n}" for n in range(1, 12)]
