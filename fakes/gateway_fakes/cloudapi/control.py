"""`/_fake/*` endpoints so a standalone fake (demo, manual runs) can be driven over HTTP.

They mirror the Python driver methods and are not part of Meta's API; in-process tests call
the methods directly.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .state import Delivery

if TYPE_CHECKING:
    from .server import FakeCloudApi

JSON = Any


def _delivery(d: Delivery) -> JSON:
    return {"url": d.url, "attempt": d.attempt, "status": d.status, "error": d.error}


def control_routes(fake: FakeCloudApi) -> list[Route]:
    async def body(request: Request) -> dict[str, JSON]:
        data = await request.json() if await request.body() else {}
        return data if isinstance(data, dict) else {}

    async def customer_writes(request: Request) -> Response:
        data = await body(request)
        wa_id, text = str(data.pop("wa_id")), str(data.pop("text", ""))
        return JSONResponse({"id": fake.customer_writes(wa_id, text, **data)})

    async def status(request: Request) -> Response:
        data = await body(request)
        message_id, kind = str(data["id"]), str(data["status"])
        if kind == "failed":
            fake.mark_failed(message_id, int(data.get("code", 131026)))
        else:
            {"sent": fake.mark_sent, "delivered": fake.mark_delivered, "read": fake.mark_read}[
                kind
            ](message_id)
        return JSONResponse({"ok": True})

    async def deliver(request: Request) -> Response:
        data = await body(request)
        if not fake.callback_url:
            return JSONResponse({"error": "no callback_url configured"}, status_code=409)
        deliveries = await fake.deliver_webhooks(
            batch=bool(data.get("batch", True)),
            duplicate=int(data.get("duplicate", 0)),
            shuffle_statuses=bool(data.get("shuffle_statuses", False)),
        )
        return JSONResponse([_delivery(d) for d in deliveries])

    async def retry(request: Request) -> Response:
        if not fake.callback_url:
            return JSONResponse({"error": "no callback_url configured"}, status_code=409)
        data = await body(request)
        made = await fake.retry_webhooks(force=bool(data.get("force", False)))
        return JSONResponse([_delivery(d) for d in made])

    async def phone(request: Request) -> Response:
        data = await body(request)
        if "event" in data:
            fake.transition(str(data["event"]))
        return JSONResponse(asdict(fake.phone))

    async def advance(request: Request) -> Response:
        data = await body(request)
        advance_clock = getattr(fake.clock, "advance", None)
        if advance_clock is None:
            return JSONResponse({"error": "clock cannot advance"}, status_code=409)
        return JSONResponse({"now": advance_clock(float(data.get("seconds", 0)))})

    async def sent(request: Request) -> Response:
        rows = [
            {"id": m.id, "to": m.to, "type": m.type, "status": m.status, "request": m.request}
            for m in fake.sent
        ]
        return JSONResponse(rows)

    async def inbound(request: Request) -> Response:
        return JSONResponse(
            [{"id": m.id, "wa_id": m.wa_id, "message": m.message} for m in fake.inbound]
        )

    async def fail_next(request: Request) -> Response:
        data = await body(request)
        fake.fail_next(int(data.pop("n", 1)), **data)
        return JSONResponse({"ok": True})

    return [
        Route("/_fake/customer_writes", customer_writes, methods=["POST"]),
        Route("/_fake/status", status, methods=["POST"]),
        Route("/_fake/deliver", deliver, methods=["POST"]),
        Route("/_fake/retry", retry, methods=["POST"]),
        Route("/_fake/phone", phone, methods=["GET", "POST"]),
        Route("/_fake/advance", advance, methods=["POST"]),
        Route("/_fake/sent", sent),
        Route("/_fake/inbound", inbound),
        Route("/_fake/fail_next", fail_next, methods=["POST"]),
    ]
