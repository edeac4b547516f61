"""`gateway rehearse`: the fakes in one process, `gateway run` in another, real HTTP(S).

What the printed steps do, done by the test: Bitrix24 installs the app (the gateway trades
the tokens at the fake OAuth server over https, trusting this run's CA through `ca_file`),
the administrator links the number, a customer writes and the operator sees it, the operator
answers and the customer gets it. No step waits on a timer: the fakes' `/_fake/wait` long
polls return when the gateway's call lands.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import httpx
import pytest
from gateway_fakes.rehearsal import MARK, prepare_directory

from gateway.cli import main
from gateway.testing.process import GatewayProcess, free_port

pytestmark = pytest.mark.anyio

CUSTOMER = "79991234567"
READY = "Serving the fakes until Ctrl-C."


class Rehearse:
    """`gateway rehearse` in its own process, its output collected as it comes."""

    def __init__(self, directory: Path, port: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "gateway", "rehearse", "--directory", str(directory)]
        self.process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.output: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if READY in line:
                self.ready.set()
        self.ready.set()  # ended: the test sees READY missing

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _url(text: str, label: str) -> str:
    label = {"chatapi": "Chat API", "greenapi": "GREEN-API"}.get(label, label)
    found = re.search(rf"fake {label}\s+(https?://127\.0\.0\.1:\d+)", text)
    assert found, text
    return found[1]


async def test_a_bitrix24_rehearsal_installs_links_and_converses_through_real_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `gateway check` and `status` run asyncio themselves: in a thread beside this loop.
    directory, port = tmp_path / "rehearsal", free_port()
    fakes = Rehearse(directory, port)
    gateway: GatewayProcess | None = None
    try:
        await anyio.to_thread.run_sync(fakes.ready.wait, 60.0)
        assert READY in fakes.text, fakes.text
        settings = directory / "settings.toml"
        assert f"gateway run --settings {settings}" in fakes.text
        portal, whatsapp = (
            _url(fakes.text, "Bitrix24 portal \\+ OAuth"),
            _url(fakes.text, "WhatsApp Cloud API"),
        )
        assert portal.startswith("https://")
        # The settings file is `gateway check`-clean, and says what is rehearsal-only.
        assert await anyio.to_thread.run_sync(main, ["check", "--settings", str(settings)]) == 0
        checked = capsys.readouterr().out
        assert "allow_local_public_url = true" in checked
        assert settings.read_text().count("REHEARSAL ONLY") >= 2

        gateway = GatewayProcess(settings, port)
        await gateway.start()
        trust = ssl.create_default_context(cafile=str(directory / "tls" / "ca.pem"))
        async with (
            httpx.AsyncClient(base_url=portal, verify=trust, timeout=60.0) as b24,
            httpx.AsyncClient(base_url=whatsapp, timeout=60.0) as wa,
        ):
            installed = await b24.post(
                "/_fake/install", json={"url": f"{gateway.url}/webhooks/b24/install"}
            )
            assert installed.json() == {"status": 200}
            await b24.post("/_fake/finish_install")
            for line, channel in enumerate(("wa", "wa_chatapi", "wa_green"), start=1):
                linked = await b24.post("/_fake/link", json={"line": line, "channel": channel})
                assert linked.json()["status"] == 200, linked.text

            await wa.post("/_fake/customer_writes", json={"wa_id": CUSTOMER, "text": "Hello!"})
            [delivery] = (await wa.post("/_fake/deliver")).json()
            assert delivery["status"] == 200
            seen = await b24.get("/_fake/wait", params={"chat_id": CUSTOMER, "count": 1})
            assert seen.status_code == 200, seen.text
            assert seen.json()["messages"][0]["text"] == "Hello!"

            answer = {"line": 1, "chat_id": CUSTOMER, "text": "Yes, it is ready."}
            assert (await b24.post("/_fake/operator_writes", json=answer)).status_code == 200
            got = await wa.get("/_fake/wait", params={"to": CUSTOMER, "count": 1})
            assert got.status_code == 200, got.text
            assert "Yes, it is ready." in got.json()["messages"][0]["text"]

            # The other providers push their webhooks themselves, to where the gateway
            # pointed them at its start.
            for name, line, customer in (
                ("chatapi", 2, "79991234568"),
                ("greenapi", 3, "79991234569"),
            ):
                async with httpx.AsyncClient(base_url=_url(fakes.text, name), timeout=60.0) as fake:
                    writes = {"chat": customer, "text": f"Hi from {name}"}
                    assert (
                        await fake.post("/_fake/customer_writes", json=writes)
                    ).status_code == 200
                    seen = await b24.get("/_fake/wait", params={"chat_id": customer, "count": 1})
                    [message] = seen.json()["messages"]
                    assert (message["text"], message["line"]) == (f"Hi from {name}", line)
                    # The connector's chat id, as the operator's chat knows it.
                    chat = message["chat_id"]
                    answer = {"line": line, "chat_id": chat, "text": f"Hello, {name}!"}
                    assert (
                        await b24.post("/_fake/operator_writes", json=answer)
                    ).status_code == 200
                    got = await fake.get("/_fake/wait", params={"to": customer, "count": 1})
                    assert got.status_code == 200, got.text
                    assert f"Hello, {name}!" in got.json()["messages"][0]["text"]

        # Nothing needs a person now: installed, linked, delivered.
        status = await anyio.to_thread.run_sync(main, ["status", "--settings", str(settings)])
        assert status == 0, capsys.readouterr()
    finally:
        if gateway is not None and gateway.process is not None:
            gateway.stop()
        code = fakes.stop()
    assert code == 0, fakes.text
    assert "Traceback" not in fakes.text


def test_a_rehearsal_starts_afresh_and_refuses_a_folder_not_its_own(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "settings.toml").write_text(f"{MARK}: ...\n")
    (own / "gateway.db").write_text("the last run's portal tokens")
    assert prepare_directory(own) is None
    assert list(own.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "settings.toml").write_text('public_url = "https://gw.example.com"\n')
    problem = prepare_directory(other)
    assert problem is not None and "not a rehearsal's" in problem
    assert (other / "settings.toml").exists()
    assert prepare_directory(tmp_path / "new") is None


def test_the_rehearse_command_refuses_a_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["rehearse", "--directory", str(tmp_path)]) == 2
    assert "not a rehearsal's" in capsys.readouterr().err
