"""The benchmark's reference servers answer like the webhook they stand beside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from bench.servers import bare_app, floor_app

pytestmark = pytest.mark.anyio
BODY = {"messages": [{"id": "false_1@c.us_A", "body": "hi"}]}


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")


async def test_bare_endpoint_parses_and_answers() -> None:
    async with client(bare_app()) as http:
        reply = await http.post("/webhooks/wa/secret", json=BODY)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "accepted": 1, "duplicates": 0}


async def test_floor_endpoint_commits_each_body_before_answering(tmp_path: Path) -> None:
    db = tmp_path / "floor.db"
    app = floor_app(str(db))
    async with app.router.lifespan_context(app), client(app) as http:
        for _ in range(3):
            reply = await http.post("/webhooks/wa/secret", json=BODY)
            assert reply.json()["accepted"] == 1
        form = await http.post("/webhooks/b24/events", data={"event": "ONIMCONNECTORMESSAGEADD"})
        assert form.status_code == 200
    connection = sqlite3.connect(db)
    try:
        events = [row[0] for row in connection.execute("SELECT event FROM events ORDER BY id")]
    finally:
        connection.close()
    assert len(events) == 4
    assert b"false_1@c.us_A" in events[0]
    assert b"ONIMCONNECTORMESSAGEADD" in events[3]
