"""`gateway run` with `[workers] delivery_process = true` (and by default, "auto", on more
than one core): one supervisor, an HTTP process and a delivery process sharing the store
(gateway.supervisor), as real processes.

Webhooks go to the HTTP process and are delivered by the delivery process; either child
SIGKILLed mid-load is restarted and nothing is lost or doubled; SIGTERM stops all three; a
SIGKILLed supervisor takes its children with it. On SQLite, and on PostgreSQL when
GATEWAY_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.supervisor import MAX_QUICK_EXITS
from gateway.testing import Recorder
from gateway.testing.process import READY_MARK, GatewayProcess, free_port, serve

pytestmark = pytest.mark.anyio

CHANNEL_AUTH = {"Authorization": "Bearer wa-token"}
CONVERSATIONS = [f"c{i}" for i in range(4)]
PER_CONVERSATION = 25


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    from gateway.testing.postgres import postgres_schema

    with postgres_schema() as url:
        yield url


def write_settings(
    tmp_path: Path,
    store_url: str,
    channel_url: str,
    crm_url: str,
    delivery_process: str | None = "true",
) -> Path:
    """Settings for the test providers; `delivery_process=None` leaves the default."""
    workers = "" if delivery_process is None else f"delivery_process = {delivery_process}"
    path = tmp_path / "settings.toml"
    path.write_text(
        f"""
public_url = "http://gateway.test"

[store]
url = "{store_url}"

[media]
directory = "{tmp_path / "media"}"

[retry]
base_delay = 0.05
max_delay = 0.5

[workers]
concurrency = 4
lease_seconds = 2
poll_interval = 1
{workers}

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


def customer(msg_id: str, chat: str) -> dict[str, object]:
    return {"messages": [{"id": msg_id, "chat": chat, "text": msg_id}]}


async def gone(pid: int) -> None:
    """Until process `pid` has ended (a pidfd turns readable then); 30 s at most."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, ended.set)
    try:
        await asyncio.wait_for(ended.wait(), 30)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def post_all(client: httpx.AsyncClient) -> None:
    for n in range(PER_CONVERSATION):
        batch = [
            client.post("/webhooks/wa", json=customer(f"{c}-{n}", c), headers=CHANNEL_AUTH)
            for c in CONVERSATIONS
        ]
        for response in await asyncio.gather(*batch):
            assert response.status_code == 200


def assert_once_in_order(crm: Recorder) -> None:
    keys = [r.key for r in crm.received]
    assert len(keys) == len(set(keys))  # one effect per message
    for chat in CONVERSATIONS:
        assert crm.texts(chat) == [f"{chat}-{n}" for n in range(PER_CONVERSATION)]


async def test_sigkill_of_the_delivery_process_loses_nothing(
    tmp_path: Path, store_url: str
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    gate = crm.hold(lambda item: item["text"] == "c1-5")
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        port = free_port()
        settings = write_settings(tmp_path, store_url, channel_url, crm_url)
        gateway = GatewayProcess(settings, port)
        await gateway.start()
        try:
            delivery = await gateway.child_pid("delivery")
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                await post_all(client)
                await asyncio.wait_for(crm.holding.wait(), 30)
                os.kill(delivery, signal.SIGKILL)  # one delivery is in flight at the CRM
                again = await gateway.child_pid("delivery", after=delivery)
                gate.set()  # the in-flight request lands after its sender died
                await crm.wait_count(len(CONVERSATIONS) * PER_CONVERSATION, timeout=60)
                assert again != delivery
                assert (await client.get("/readyz")).status_code == 200
        finally:
            assert gateway.stop() == 0
    assert_once_in_order(crm)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason='"auto" is one process on one core')
async def test_by_default_delivery_runs_beside_and_one_scrape_shows_both(
    tmp_path: Path,
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    store_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        settings = write_settings(tmp_path, store_url, channel_url, crm_url, None)
        gateway = GatewayProcess(settings, free_port())
        await gateway.start()
        try:
            delivery = await gateway.child_pid("delivery")
            http = await gateway.child_pid("http")
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                webhook = customer("m-1", "c0")
                response = await client.post("/webhooks/wa", json=webhook, headers=CHANNEL_AUTH)
                assert response.status_code == 200
                await crm.wait_count(1, timeout=30)
                # The delivery process counts once the CRM has answered: scrape until then.
                delivered = re.compile(r'gateway_jobs_delivered_total\{destination="crm",.*\} 1\n')
                deadline = asyncio.get_running_loop().time() + 30
                while not delivered.search(text := (await client.get("/metrics")).text):
                    assert asyncio.get_running_loop().time() < deadline, text
                assert 'gateway_events_received_total{instance="wa"} 1\n' in text  # HTTP's
                assert 'gateway_delivery_latency_seconds_count{destination="crm"} 1\n' in text
                assert "gateway_delivery_process_up 1\n" in text
                assert (await client.get("/readyz")).json() == {"ready": True, "problems": []}
            assert delivery != http
        finally:
            assert gateway.stop() == 0
    assert crm.texts("c0") == ["m-1"]


async def test_sigkill_of_the_http_process_loses_nothing(tmp_path: Path, store_url: str) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        port = free_port()
        gateway = GatewayProcess(write_settings(tmp_path, store_url, channel_url, crm_url), port)
        await gateway.start()
        try:
            http = await gateway.child_pid("http")
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                await post_all(client)
            os.kill(http, signal.SIGKILL)
            await gateway.child_pid("http", after=http)
            await gateway.wait_for_line(READY_MARK)
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                late = customer("late-1", "late")
                response = await client.post("/webhooks/wa", json=late, headers=CHANNEL_AUTH)
                assert response.status_code == 200
            await crm.wait_count(len(CONVERSATIONS) * PER_CONVERSATION + 1, timeout=60)
        finally:
            assert gateway.stop() == 0
    assert_once_in_order(crm)
    assert crm.texts("late") == ["late-1"]


async def test_sigterm_stops_both_and_a_killed_supervisor_takes_them_along(
    tmp_path: Path,
) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    store_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        settings = write_settings(tmp_path, store_url, channel_url, crm_url)
        gateway = GatewayProcess(settings, free_port())
        await gateway.start()
        children = [await gateway.child_pid("delivery"), await gateway.child_pid("http")]
        if not any("delivery process ready" in line for line in gateway.lines):
            await gateway.wait_for_line("delivery process ready")
        assert gateway.stop() == 0
        for pid in children:
            await gone(pid)

        gateway = GatewayProcess(settings, free_port())
        await gateway.start()
        children = [await gateway.child_pid("delivery"), await gateway.child_pid("http")]
        gateway.kill()
        for pid in children:
            await gone(pid)
        # Its lock went with the last of them: the store opens again.
        await gateway.start()
        assert gateway.stop() == 0


@asynccontextmanager
async def on_sqlite(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, Recorder]]:
    """A started gateway with a delivery process on a SQLite file, and its CRM fake."""
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    store_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
        settings = write_settings(tmp_path, store_url, channel_url, crm_url)
        gateway = GatewayProcess(settings, free_port())
        await gateway.start()
        yield gateway, crm


async def test_a_second_gateway_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    async with on_sqlite(tmp_path) as (gateway, _):
        try:
            command = [sys.executable, "-m", "gateway", "run", "--settings", str(gateway.settings)]
            second = await asyncio.to_thread(
                subprocess.run,
                [*command, "--port", str(free_port())],
                capture_output=True,
                text=True,
                env=gateway.env,
                timeout=60,
            )
        finally:
            assert gateway.stop() == 0
    assert second.returncode == 1
    assert "another gateway process is using the SQLite store" in second.stderr


def test_delivery_process_setting_is_checked(tmp_path: Path) -> None:
    from gateway.settings import check_settings
    from gateway.supervisor import wanted

    def settings_with(value: str, env: dict[str, str] | None = None) -> Any:
        path = tmp_path / "settings.toml"
        path.write_text(
            'public_url = "http://gw.test"\n[store]\nurl = "sqlite://:memory:"\n'
            f"[workers]\ndelivery_process = {value}\n"
        )
        return path, check_settings(str(path), environ=env or {})

    path, (_, problems) = settings_with('"sometimes"')
    [problem] = problems
    assert (problem.file, problem.key) == (str(path), "workers.delivery_process")
    assert '"auto", true or false' in problem.fix
    _, (settings, problems) = settings_with("false", {"GATEWAY_WORKERS__DELIVERY_PROCESS": "auto"})
    assert problems == [] and settings.workers.delivery_process == "auto"
    assert wanted(settings) == (False, [])  # a store in memory cannot be shared
    _, (settings, problems) = settings_with("true")
    split, refused = wanted(settings)
    assert not split and [p.key for p in refused] == ["workers.delivery_process"]
    assert "sqlite:///var/gateway.db" in refused[0].fix


def test_auto_by_default_is_one_process_in_memory_or_on_one_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.settings import check_settings
    from gateway.supervisor import wanted

    def default_settings(url: str) -> Any:
        path = tmp_path / "settings.toml"
        path.write_text(f'public_url = "http://gw.test"\n[store]\nurl = "{url}"\n')
        settings, problems = check_settings(str(path), environ={})
        assert problems == [] and settings.workers.delivery_process == "auto"
        return settings

    on_file = default_settings(f"sqlite:///{tmp_path / 'gateway.db'}")
    in_memory = default_settings("sqlite://:memory:")
    on_postgres = default_settings("postgresql://gw@db.example/gw")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert wanted(on_file) == (True, []) and wanted(on_postgres) == (True, [])
    assert wanted(in_memory) == (False, [])  # nothing to share: one process, no complaint
    for cores in (1, None):  # os.cpu_count() may not know
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert wanted(on_file) == (False, []) and wanted(on_postgres) == (False, [])


async def test_named_locks_exclude_another_process(tmp_path: Path) -> None:
    from gateway.store.sqlite import SQLiteStore

    path = str(tmp_path / "gateway.db")
    holder = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, "-c", HOLD_LOCK, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    store = SQLiteStore(path, shared=True)
    await store.open()
    try:
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        assert store._named is not None
        tries = 0
        try_once = store._named._try

        def counted(offset: int) -> bool:
            nonlocal tries
            tries += 1
            return try_once(offset)

        store._named._try = counted  # type: ignore[method-assign]
        entered = asyncio.Event()

        async def take() -> None:
            async with store.lock("token:portal"):
                entered.set()

        task = asyncio.create_task(take())
        deadline = asyncio.get_running_loop().time() + 30
        while tries < 3:  # it has found the lock taken three times
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        assert not entered.is_set()  # the other process holds it
        holder.stdin.close()  # it lets go
        await task
        assert entered.is_set()
    finally:
        holder.wait()
        await store.close()


HOLD_LOCK = """
import asyncio, sys
from gateway.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1], shared=True)
    await store.open()
    async with store.lock("token:portal"):
        print("held", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    await store.close()

asyncio.run(main())
"""


def _listener() -> tuple[list[str | None], asyncio.Event, Callable[[str | None], None]]:
    """What a wake-up receiver is told, an event set on each, and the callback to give it."""
    heard: list[str | None] = []
    got = asyncio.Event()

    def note(name: str | None) -> None:
        heard.append(name)
        got.set()

    return heard, got, note


async def test_wake_ups_reach_the_delivery_process_end(tmp_path: Path) -> None:
    from gateway.wakeup import WakeReceiver, WakeSender

    heard, got, note = _listener()
    path = str(tmp_path / "gateway.db")
    sender = WakeSender(path)
    sender.wake("crm")  # nobody listens yet: lost, the poll covers it
    await asyncio.sleep(0)
    assert (sender.sent, sender.lost) == (0, 1)
    receiver = WakeReceiver(path, note)
    assert receiver.start()
    try:
        sender.wake("crm")
        sender.wake("wa")
        sender.wake("crm")
        await asyncio.wait_for(got.wait(), 10)
        assert sorted(heard) == ["crm", "wa"]  # one datagram per loop turn
        heard.clear()
        got.clear()
        sender.wake(None)
        sender.wake("crm")
        await asyncio.wait_for(got.wait(), 10)
        assert heard == [None]
    finally:
        receiver.stop()
        sender.close()


@pytest.mark.skipif(sys.platform != "linux", reason="abstract address, SCM_CREDENTIALS")
async def test_a_wake_up_from_another_user_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import wakeup

    heard, got, note = _listener()
    path = str(tmp_path / "gateway.db")
    sender, receiver = wakeup.WakeSender(path), wakeup.WakeReceiver(path, note)
    assert receiver.start()
    real = os.getuid()
    try:
        # The kernel names the sender's user; seen from another user's receiver, a stranger.
        monkeypatch.setattr(wakeup.os, "getuid", lambda: real + 1)
        sender.wake("crm")
        await asyncio.sleep(0)  # sent at the end of the loop turn, and queued at once
        receiver._read()  # read while the sender is a stranger
        assert heard == []
        monkeypatch.setattr(wakeup.os, "getuid", lambda: real)
        sender.wake("wa")
        await asyncio.wait_for(got.wait(), 10)
        assert heard == ["wa"]
    finally:
        receiver.stop()
        sender.close()


@pytest.mark.postgres
async def test_workers_n_are_n_http_processes_beside_the_delivery_process(
    tmp_path: Path,
) -> None:
    from gateway.testing.postgres import postgres_schema

    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    with postgres_schema() as url:
        async with serve(channel.app) as channel_url, serve(crm.app) as crm_url:
            settings = write_settings(tmp_path, url, channel_url, crm_url)
            gateway = GatewayProcess(settings, free_port(), args=["--workers", "2"])
            await gateway.start()
            try:
                async with httpx.AsyncClient(base_url=gateway.url) as client:
                    await post_all(client)
                await crm.wait_count(len(CONVERSATIONS) * PER_CONVERSATION, timeout=60)
                mark = "started the http process"
                while sum(mark in line for line in gateway.lines) < 2:
                    await gateway.wait_for_line(mark)
                assert sum("started the delivery process" in line for line in gateway.lines) == 1
            finally:
                assert gateway.stop() == 0
    assert_once_in_order(crm)


async def test_a_child_that_keeps_failing_at_start_stops_the_gateway(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    db.write_bytes(b"this is not a database" * 100)  # every child fails to open it
    settings = write_settings(
        tmp_path, f"sqlite:///{db}", "http://127.0.0.1:9", "http://127.0.0.1:9"
    )
    env = {**os.environ, "GATEWAY_TEST_PLUGINS": "gateway.testing.providers"}
    command = [sys.executable, "-m", "gateway", "run", "--settings", str(settings)]
    finished = await asyncio.to_thread(
        subprocess.run,
        [*command, "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert finished.returncode == 1
    assert "failed 5 times within 10 s of its start" in finished.stderr


async def test_a_child_killed_again_and_again_is_restarted_every_time(tmp_path: Path) -> None:
    # SIGKILL comes from outside (the OOM killer, an operator, a chaos run), not from a child
    # failing to start: more of them in a row than a failing start is allowed must not stop
    # the gateway, which would refuse every webhook.
    async with on_sqlite(tmp_path) as (gateway, crm):
        try:
            delivery = await gateway.child_pid("delivery")
            for _ in range(MAX_QUICK_EXITS + 1):
                os.kill(delivery, signal.SIGKILL)  # each within seconds of its start
                delivery = await gateway.child_pid("delivery", after=delivery)
            assert gateway.process is not None and gateway.process.poll() is None
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                webhook = customer("after-kills", "c0")
                response = await client.post("/webhooks/wa", json=webhook, headers=CHANNEL_AUTH)
                assert response.status_code == 200
            await crm.wait_count(1, timeout=30)
        finally:
            assert gateway.stop() == 0
    assert crm.texts("c0") == ["after-kills"]
    assert not any("stopping the gateway" in line for line in gateway.lines)
