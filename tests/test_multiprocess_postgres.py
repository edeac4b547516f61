"""Several `gateway run` processes on one PostgreSQL database, as a scaled-out deployment.

Webhooks are spread over the processes round-robin (as a reverse proxy does); the process
that is delivering a given message is SIGKILLed with the request in flight and restarted.
Every message must then be delivered once, in order per conversation. Needs PostgreSQL
(GATEWAY_TEST_POSTGRES_URL; skipped without it, failed without it in CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.testing import Recorder
from gateway.testing.postgres import postgres_schema
from gateway.testing.process import GatewayProcess, free_port, serve

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
PROCESSES = 3


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def write_settings(tmp_path: Path, store_url: str, channel_url: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f"""
public_url = "http://gateway.test"

[store]
url = "{store_url}"

[retry]
base_delay = 0.05
max_delay = 0.5

[workers]
concurrency = 2
lease_seconds = 2
poll_interval = 1
# Single-process gateways sharing one database: the SIGKILL hits the one delivering (a
# supervisor's children would stop gracefully), and `--workers 2` is uvicorn's workers,
# each delivering (tests/test_delivery_process.py has them beside a delivery process).
delivery_process = false

[channels.wa]
provider = "test-channel"
base_url = "{channel_url}"
token = "wa-token"

[crms.crm]
provider = "test-crm"
base_url = "http://set-per-process.invalid"
token = "crm-token"
max_batch = 10

[routes.main]
channel = "wa"
crm = "crm"
"""
    )
    return path


def tagged(app: ASGIApp, tag: str, bodies: list[tuple[str, bytes]]) -> ASGIApp:
    """`app`, noting which gateway process sent each request (one URL per process)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        bodies.append((tag, body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return wrapped


@contextlib.asynccontextmanager
async def crm_per_process(
    crm: Recorder, bodies: list[tuple[str, bytes]]
) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        urls = [
            await stack.enter_async_context(serve(tagged(crm.app, f"p{n}", bodies)))
            for n in range(PROCESSES)
        ]
        yield urls


def customer(chat: str, n: int) -> dict[str, object]:
    text = f"{chat}-{n}"
    return {"messages": [{"id": text, "chat": chat, "text": text}]}


async def post_round(
    clients: list[httpx.AsyncClient], conversations: list[str], n: int, counter: list[int]
) -> None:
    """Message n of every conversation at once, each to the next process in turn."""
    requests = []
    for chat in conversations:
        client = clients[counter[0] % len(clients)]
        counter[0] += 1
        requests.append(client.post("/webhooks/wa", json=customer(chat, n), headers=CHANNEL_AUTH))
    for response in await asyncio.gather(*requests):
        assert response.status_code == 200, response.text


async def test_three_processes_survive_a_sigkill_mid_delivery(tmp_path: Path, pg_url: str) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    conversations = [f"c{i}" for i in range(9)]
    per_conversation = 30
    bodies: list[tuple[str, bytes]] = []
    gate = crm.hold(lambda item: item["text"] == "c3-10")
    async with serve(channel.app) as channel_url, crm_per_process(crm, bodies) as crm_urls:
        settings = write_settings(tmp_path, pg_url, channel_url)
        processes = [
            GatewayProcess(
                settings,
                free_port(),
                env={
                    "GATEWAY_CRMS__CRM__BASE_URL": crm_urls[n],
                    "GATEWAY_MEDIA__DIRECTORY": str(tmp_path / f"media-{n}"),
                },
            )
            for n in range(PROCESSES)
        ]
        try:
            # Started together: they race to migrate the empty schema, one wins.
            await asyncio.gather(*(p.start() for p in processes))
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(httpx.AsyncClient(base_url=p.url))
                    for p in processes
                ]
                counter = [0]
                for n in range(per_conversation // 2):
                    await post_round(clients, conversations, n, counter)
                await asyncio.wait_for(crm.holding.wait(), 30)
                # Before any crash, processes sharing lanes never sent anything twice.
                assert crm.duplicates == 0
                [victim] = {tag for tag, body in bodies if b'"c3-10"' in body}
                index = int(victim[1:])
                processes[index].kill()
                gate.set()  # the in-flight request lands after its sender died
                live = [c for i, c in enumerate(clients) if i != index]
                for n in range(per_conversation // 2, per_conversation * 3 // 4):
                    await post_round(live, conversations, n, counter)
                await processes[index].start()
                for n in range(per_conversation * 3 // 4, per_conversation):
                    await post_round(clients, conversations, n, counter)
                await crm.wait_count(len(conversations) * per_conversation, timeout=60)
                # Every process delivered some of the work, not only the one that took it in.
                assert {tag for tag, _ in bodies} == {f"p{n}" for n in range(PROCESSES)}
        finally:
            for process in processes:
                process.stop()
    keys = [r.key for r in crm.received]
    assert len(keys) == len(set(keys)) == len(conversations) * per_conversation
    for chat in conversations:
        assert crm.texts(chat) == [f"{chat}-{n}" for n in range(per_conversation)]
    assert crm.duplicates >= 1  # c3-10 was sent again by the process that took over
    # Batching still works with a destination's lanes spread over processes.
    assert max(len(json.loads(body)["items"]) for _, body in bodies) > 1


async def test_gateway_run_with_two_workers_shares_the_database(
    tmp_path: Path, pg_url: str
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    conversations = [f"c{i}" for i in range(4)]
    per_conversation = 10
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        settings = write_settings(tmp_path, pg_url, channel_url)
        gateway = GatewayProcess(
            settings,
            free_port(),
            env={
                "GATEWAY_CRMS__CRM__BASE_URL": crm_url,
                "GATEWAY_MEDIA__DIRECTORY": str(tmp_path / "media"),
            },
            args=["--workers", "2"],
        )
        await gateway.start()
        try:
            for _ in range(2):  # the supervisor listens first, then each worker starts
                await gateway.wait_for_line("Application startup complete")
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                for n in range(per_conversation):
                    await post_round([client], conversations, n, [0])
            await crm.wait_count(len(conversations) * per_conversation, timeout=30)
        finally:
            assert gateway.stop() == 0
    for chat in conversations:
        assert crm.texts(chat) == [f"{chat}-{n}" for n in range(per_conversation)]
    assert crm.duplicates == 0
