"""A client that trickles its body is cut off with a JSON 408, and nothing is stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import gateway.app
from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio


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


async def test_a_trickled_body_gets_408(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.app, "BODY_TIMEOUT", 0.3)
    recorder = Recorder()
    apps = {"channel.test": recorder.app, "crm.test": recorder.app}
    async with running_gateway(settings(tmp_path), apps=apps, serve_http=True) as h:
        assert h.url is not None
        url = httpx.URL(h.url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        body = b'{"messages": [{"id": "m1", "chat": "c1", "text": "hi"}]}'
        writer.write(
            b"POST /webhooks/wa HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer t\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]  # ...and the rest never comes
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert "did not arrive within" in json.loads(payload)["error"]["message"]
        stats = await h.gateway.store.stats(h.gateway.clock())
    assert all(s.ready == 0 for s in stats)
