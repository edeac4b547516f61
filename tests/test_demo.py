"""`gateway demo --once`: the README's first command, as a test."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
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
