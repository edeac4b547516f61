"""Webhooks and group commit: webhooks that arrive together share one transaction, none is
answered before that transaction committed, and a group that could not be stored answers
each of its webhooks 503 with Retry-After, so the provider delivers them again and
nothing is lost."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from gateway.store import sqlite_queue
from gateway.store.sqlite import SQLiteStore
from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio
N = 8


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "c"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


def post(client: httpx.AsyncClient, n: int) -> Any:
    body = {"messages": [{"id": f"m{n}", "chat": f"c{n % 3}", "text": f"hello {n}"}]}
    return client.post("/webhooks/wa", json=body, headers={"Authorization": "Bearer t"})


def stored_events(db: Path) -> int:
    """Events committed to the file, as another reader sees them."""
    connection = sqlite3.connect(db)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        connection.close()


async def test_no_webhook_is_answered_before_its_group_committed(tmp_path: Path) -> None:
    apps = {"channel.test": Recorder().app, "crm.test": Recorder().app}
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        store = h.gateway.store
        assert isinstance(store, SQLiteStore)
        group: Any = store._ingests
        grouped: list[int] = []
        all_grouped = asyncio.Event()
        start = group._start

        def spy(requests: Sequence[Any]) -> Any:
            grouped.append(len(requests))
            if sum(grouped) >= N:
                all_grouped.set()
            return start(requests)

        group._start = spy
        # Park the store's writer thread: nothing can commit until the gate opens.
        entered, gate = threading.Event(), threading.Event()

        def blocker(_connection: sqlite3.Connection) -> None:
            entered.set()
            gate.wait(10)

        parked = asyncio.ensure_future(store._run(blocker))
        await anyio.to_thread.run_sync(entered.wait)
        requests = [asyncio.ensure_future(post(h.client, n)) for n in range(N)]
        with anyio.fail_after(10):
            await all_grouped.wait()
        # Every webhook was planned and handed to the store, and none has its answer.
        assert not any(r.done() for r in requests)
        assert stored_events(tmp_path / "gw.db") == 0
        assert max(grouped) > 1  # webhooks that arrived together share a group
        gate.set()
        responses = await asyncio.gather(*requests)
        await parked
        assert [r.status_code for r in responses] == [200] * N
        assert all(r.json()["accepted"] == 1 for r in responses)
        assert stored_events(tmp_path / "gw.db") == N


async def test_a_group_that_cannot_be_stored_is_answered_503_and_redelivery_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm = Recorder()
    apps = {"channel.test": Recorder().app, "crm.test": crm.app}
    refuse = True
    real = sqlite_queue.ingest

    def failing(*args: Any) -> Any:
        if refuse:
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args)

    monkeypatch.setattr(sqlite_queue, "ingest", failing)
    async with running_gateway(settings(tmp_path), apps=apps) as h:
        refused = await asyncio.gather(*(post(h.client, n) for n in range(N)))
        assert [r.status_code for r in refused] == [503] * N
        assert all(r.headers["retry-after"] for r in refused)
        assert all("deliver it again" in r.json()["error"]["message"] for r in refused)
        assert stored_events(tmp_path / "gw.db") == 0
        refuse = False
        # The provider delivers each one again; each is new, stored and delivered once.
        again = await asyncio.gather(*(post(h.client, n) for n in range(N)))
        assert [r.json()["accepted"] for r in again] == [1] * N
        delivered = await h.observer.wait_for("delivered", N)
        assert sorted(o.message_id or "" for o in delivered) == sorted(f"m{n}" for n in range(N))
    assert stored_events(tmp_path / "gw.db") == N
