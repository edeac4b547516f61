"""Issue 12, low: an unwritable media folder failed whole batches with tracebacks, and
four attempts later the file message was dead-lettered with no operator notice.

A local storage fault is the gateway's own: /readyz lists it, and each message whose file
could not be kept arrives at once with a note saying so (not retried as a provider fault).
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway import media

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
WA_AUTH = {"Authorization": "Bearer wa-token"}


def disk_full(*_args: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def _pdf(_request: Any) -> Response:
    return Response(b"%PDF-1.4 bill", media_type="application/pdf")


FILES = Starlette(routes=[Route("/{name}", _pdf)])


async def test_a_full_disk_is_reported_and_the_message_still_arrives(
    b24: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with b24(files=FILES) as s:
        await s.install()
        await s.link()
        monkeypatch.setattr(media, "_atomic_write", disk_full)
        body = {
            "messages": [
                {
                    "id": "f1",
                    "chat": "7999",
                    "from": "7999",
                    "text": "my bill",
                    "attachments": [{"kind": "document", "url": "https://files.test/bill.pdf"}],
                }
            ]
        }
        response = await s.h.client.post("/webhooks/wa", json=body, headers=WA_AUTH)
        assert response.status_code == 200
        await s.h.observer.wait_for("delivered", 1)
        [message] = s.portal.messages()
        assert "my bill" in message.text and "cannot store files" in message.text
        assert "No space left on device" in message.text
        assert s.h.observer.of_type("retried") == []
        ready = await s.h.client.get("/readyz")
        assert ready.status_code == 503
        assert any("media: cannot write" in p for p in ready.json()["problems"])
