"""Scenario 6, resource limits: a backlog of queued jobs, the gateway killed and restarted.

`gateway run` accepts the backlog while its CRM refuses connections (jobs pile up, retried
with backoff), is SIGKILLed, and restarts with the CRM reachable. Its memory (VmRSS of the
process, sampled at every delivery) stays bounded, since it never loads the whole backlog,
and delivery resumes in order per conversation, with nothing lost or doubled.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway.testing import Recorder
from gateway.testing.process import GatewayProcess, free_port, serve
from gateway.testing.tally import Tally

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer wa-token"}
PER_POST = 500


def write_settings(tmp: Path, crm_url: str, port: int) -> Path:
    path = tmp / "settings.toml"
    path.write_text(
        f"""
public_url = "http://127.0.0.1:{port}"

[store]
url = "sqlite:///{tmp / "gateway.db"}"

[media]
directory = "{tmp / "media"}"

[retry]
base_delay = 0.2
max_delay = 1.0
max_attempts = 100000

[workers]
concurrency = 4
poll_interval = 0.5
# One process: the SIGKILL and the VmRSS are of the process that holds the backlog, not
# of a supervisor whose children would stop gracefully.
delivery_process = false

[channels.wa]
provider = "test-channel"
base_url = "http://127.0.0.1:9"
token = "wa-token"

[crms.crm]
provider = "test-crm"
base_url = "{crm_url}"
token = "crm-token"
max_batch = 100

[routes.main]
channel = "wa"
crm = "crm"
"""
    )
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_backlog(tmp: Path, *, jobs: int, conversations: int) -> Tally:
    tally = Tally("backlog")
    tally.inject(f"{jobs} jobs queued behind a refusing CRM, SIGKILL, restart with it back")
    started = time.monotonic()
    crm = Recorder(name="crm", dedupe=False)
    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    gateway = GatewayProcess(write_settings(tmp, closed, port), port)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            batch: list[dict[str, str]] = []
            for n in range(jobs):
                chat = f"c{n % conversations}"
                key = f"{chat}/{n // conversations}"
                tally.send(chat, key)
                batch.append({"id": key, "chat": chat, "from": chat, "text": key})
                if len(batch) == PER_POST or n == jobs - 1:
                    response = await client.post(
                        "/webhooks/wa", json={"messages": batch}, headers=AUTH
                    )
                    assert response.status_code == 200, response.text
                    for item in batch:
                        tally.accept(item["id"])
                    batch = []
        gateway.kill()
        tally.extra["queued_seconds"] = round(time.monotonic() - started, 1)
        async with serve(crm.app) as crm_url:
            write_settings(tmp, crm_url, port)
            await gateway.start()
            assert gateway.process is not None
            pid = gateway.process.pid
            peak = rss_mb(pid)

            def drained(recorder: Recorder) -> bool:
                nonlocal peak
                peak = max(peak, rss_mb(pid))
                return len(recorder.received) >= jobs

            await crm.wait_for(drained, timeout=max(60.0, jobs / 200))
            tally.extra["peak_rss_mb"] = round(peak, 1)
    finally:
        gateway.stop()
    for received in crm.received:
        tally.deliver(received.conversation or "?", received.text)
    tally.extra["seconds"] = round(time.monotonic() - started, 1)
    return tally


async def test_backlog_short(tmp_path: Path) -> None:
    tally = await run_backlog(tmp_path, jobs=5000, conversations=50)
    print(tally.summary())
    tally.assert_clean()
    assert tally.summary()["delivered"] == 5000
    assert tally.extra["peak_rss_mb"] < 250


@pytest.mark.chaos
@pytest.mark.parametrize("jobs", [100_000])
async def test_backlog_chaos(tmp_path: Path, jobs: int) -> None:
    tally = await run_backlog(tmp_path, jobs=jobs, conversations=1000)
    print(tally.write(), tally.summary())
    tally.assert_clean()
    assert tally.extra["peak_rss_mb"] < 250
