"""The gateway as users run it: `gateway run` in its own process, real uvicorn, real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.testing import Recorder
from gateway.testing.process import GatewayProcess, free_port, serve

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}


def write_settings(tmp_path: Path, channel_url: str, crm_url: str, port: int) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f"""
public_url = "http://127.0.0.1:{port}"

[store]
url = "sqlite:///{tmp_path / "gateway.db"}"

[media]
directory = "{tmp_path / "media"}"

[retry]
base_delay = 0.05
max_delay = 0.5

[workers]
concurrency = 4
poll_interval = 0.5
# One process: the SIGKILL must hit the process that is delivering (a supervisor's
# children stop gracefully); tests/test_delivery_process.py runs the default pair.
delivery_process = false

[channels.wa]
provider = "test-channel"
base_url = "{channel_url}"
token = "wa-token"

[crms.crm]
provider = "test-crm"
base_url = "{crm_url}"
token = "crm-token"
max_batch = 10

[routes.main]
channel = "wa"
crm = "crm"
"""
    )
    return path


def customer(msg_id: str, chat: str, text: str) -> dict[str, object]:
    return {"messages": [{"id": msg_id, "chat": chat, "text": text}]}


async def test_real_uvicorn_delivers_dedupes_and_orders(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    crm.dedupe = False
    gate = crm.hold(lambda item: item["text"] == "a1")
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        port = free_port()
        gateway = GatewayProcess(write_settings(tmp_path, channel_url, crm_url, port), port)
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                for msg_id, chat in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]:
                    response = await client.post(
                        "/webhooks/wa", json=customer(msg_id, chat, msg_id), headers=CHANNEL_AUTH
                    )
                    assert response.status_code == 200
                again = await client.post(
                    "/webhooks/wa", json=customer("b1", "b", "b1"), headers=CHANNEL_AUTH
                )
                assert again.json()["duplicates"] == 1
                await crm.wait_for(lambda r: r.texts("b") == ["b1", "b2"])
                assert crm.texts("a") == []
                gate.set()
                await crm.wait_for(lambda r: len(r.received) == 4)
                assert (await client.get("/readyz")).status_code == 200
        finally:
            gateway.stop()
    assert crm.texts("a") == ["a1", "a2"]
    assert crm.duplicates == 0


async def test_sigkill_mid_delivery_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    conversations = [f"c{i}" for i in range(8)]
    per_conversation = 40
    gate = crm.hold(lambda item: item["text"] == "c3-10")
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        port = free_port()
        gateway = GatewayProcess(write_settings(tmp_path, channel_url, crm_url, port), port)
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                for n in range(per_conversation):
                    batch = [
                        client.post(
                            "/webhooks/wa",
                            json=customer(f"{chat}-{n}", chat, f"{chat}-{n}"),
                            headers=CHANNEL_AUTH,
                        )
                        for chat in conversations
                    ]
                    for response in await asyncio.gather(*batch):
                        assert response.status_code == 200
                # Every message is accepted; one delivery is in flight at the CRM. Kill now.
                await asyncio.wait_for(crm.holding.wait(), 30)
                gateway.kill()
                delivered_before = len(crm.received)
                gate.set()  # the in-flight request lands after its sender died
                await gateway.start()
                total = len(conversations) * per_conversation
                await crm.wait_count(total, timeout=60)
        finally:
            gateway.stop()
    assert delivered_before < len(conversations) * per_conversation
    keys = [r.key for r in crm.received]
    assert len(keys) == len(set(keys))  # one effect per message
    for chat in conversations:
        assert crm.texts(chat) == [f"{chat}-{n}" for n in range(per_conversation)]
