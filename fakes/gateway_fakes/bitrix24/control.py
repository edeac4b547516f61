"""A tiny `/_fake/*` HTTP API so a standalone fake can be driven from a shell or demo.

```
POST /_fake/install           {"url": "...", "ui": true}
POST /_fake/finish_install
POST /_fake/open_settings     {"line": 1}
POST /_fake/operator_writes   {"line": 1, "chat_id": "7999", "text": "Hi", "files": ["a.pdf"]}
POST /_fake/flush
GET  /_fake/state
```
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .envelope import json_response

if TYPE_CHECKING:
    from .portal import FakePortal


def routes(portal: FakePortal) -> list[Route]:
    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}

    async def install(request: Request) -> Response:
        data = await body(request)
        response = await portal.install(str(data["url"]), ui=bool(data.get("ui", True)))
        return json_response({"status": response.status_code})

    async def finish_install(request: Request) -> Response:
        portal.finish_install()
        return json_response({"installed_finished": True})

    async def open_settings(request: Request) -> Response:
        data = await body(request)
        response = await portal.open_connector_settings(int(data.get("line", 1)))
        return json_response({"status": response.status_code})

    async def operator_writes(request: Request) -> Response:
        data = await body(request)
        try:
            emission = await portal.operator_writes(
                int(data.get("line", 1)),
                str(data["chat_id"]),
                str(data.get("text", "")),
                files=list(data.get("files") or []),
            )
        except LookupError as exc:  # no such chat yet: a client must write first
            return json_response({"error": str(exc)}, status=409)
        statuses = [d.status for d in emission.deliveries]
        message_id = emission.message.im_message_id if emission.message else None
        return json_response({"message_id": message_id, "deliveries": statuses})

    async def flush(request: Request) -> Response:
        delivered = await portal.flush()
        return json_response({"deliveries": [d.status for d in delivered]})

    async def state(request: Request) -> Response:
        return json_response(
            {
                "connectors": [dataclasses.asdict(c) for c in portal.state.connectors.values()],
                "statuses": [dataclasses.asdict(s) for s in portal.state.statuses.values()],
                "bindings": [dataclasses.asdict(b) for b in portal.state.bindings],
                "messages": [dataclasses.asdict(m) for m in portal.messages()],
                "calls": [
                    {"method": c.method, "status": c.status, "error": c.error} for c in portal.calls
                ],
            }
        )

    return [
        Route("/_fake/install", install, methods=["POST"]),
        Route("/_fake/finish_install", finish_install, methods=["POST"]),
        Route("/_fake/open_settings", open_settings, methods=["POST"]),
        Route("/_fake/operator_writes", operator_writes, methods=["POST"]),
        Route("/_fake/flush", flush, methods=["POST"]),
        Route("/_fake/state", state, methods=["GET"]),
    ]
