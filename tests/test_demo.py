"""`gateway demo --once`: the README's first command, as a test."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from gateway_fakes import demo
from gateway_fakes.demo import run_demo

pytestmark = pytest.mark.anyio


async def test_the_demo_plays_the_whole_conversation(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await run_demo(once=True, out=out, workdir=tmp_path) == 0
    trace = out.getvalue()
    for expected in [
        "1. Bitrix24 installs the app",
        "imconnector.register  → ok",
        "admin clicks Link  → HTTP 200",
        'The operator sees: "Hello! Is my [b]order 1042[/b] ready?" from Ivan',
        "The portal fetched the photo from the gateway's media link: ['http://127.0.0.1:",
        "imconnector.send.status.delivery",
        "imconnector.send.status.reading",
        "Great, thanks!",
        "⚠ Not delivered to WhatsApp",
        "Parked as a dead letter, visible and replayable: 1 job(s)",
        "9. A manager writes first from a CRM card",
        "Bitrix24 ─▶ gateway  POST /webhooks/b24/sms  → HTTP 200",
        'WhatsApp got it as the template "order_update"',
        "messageservice.message.status.update  → ok",
        "The operator sees it in the open line:",
        'Her answer lands in the same chat: "Thank you, I\'ll be home."',
        "/readyz",
    ]:
        assert expected in trace, f"{expected!r} missing from:\n{trace}"
    assert "Traceback" not in trace


def _demo_folders(root: Path) -> list[Path]:
    return sorted(root.glob("whatschat-demo-*"))


def _start_demo(tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_the_serving_demo_shows_the_console_and_cleans_up_when_stopped(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """`gateway demo` in its own process: the printed URL and token sign in to the console,
    and Ctrl-C (or a service manager's SIGTERM) leaves no `whatschat-demo-*` folder behind."""
    process = _start_demo(tmp_path)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any("Serving until Ctrl-C" in line for line in lines):
            line = await asyncio.to_thread(process.stdout.readline)
            assert line, "the demo ended early:\n" + "".join(lines)
            lines.append(line)
        shown = "".join(lines)
        console = re.search(r"console\s+(http://127\.0\.0\.1:\d+/console/)", shown)
        token = re.search(r"token\s+(\S+)\s+\(this run", shown)
        assert console and token, shown
        assert len(_demo_folders(tmp_path)) == 1
        async with httpx.AsyncClient() as client:
            wrong = await client.post(f"{console[1]}signin", data={"token": "demo-admin-token"})
            assert wrong.status_code == 401
            signed = await client.post(f"{console[1]}signin", data={"token": token[1]})
            assert signed.status_code == 303
            page = await client.get(console[1])
            assert page.status_code == 200
            assert "wa" in page.text and "b24" in page.text
        process.send_signal(stop)
        rest = await asyncio.to_thread(process.communicate, None, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "Traceback" not in rest[0]
    assert _demo_folders(tmp_path) == []


async def test_the_demo_folder_is_removed_after_once_and_after_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert await run_demo(once=True, out=io.StringIO()) == 0
    assert _demo_folders(tmp_path) == []

    async def broken(*_args: object) -> None:
        assert len(_demo_folders(tmp_path)) == 1
        raise RuntimeError("the fake portal fell over")

    monkeypatch.setattr(demo, "_play", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        await run_demo(once=True, out=io.StringIO())
    assert _demo_folders(tmp_path) == []
