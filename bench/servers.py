"""The processes a benchmark talks to: `python -m bench.servers KIND --port N`.

* `bare`: the framework's own limit, a Starlette endpoint that only parses the body (JSON
  or a form, like the webhook it stands beside) and answers; same uvicorn settings as
  `gateway run` (uvloop, httptools, access log off as `gateway run` has it by default).
* `floor`: `bare` plus a durable write of each body through the gateway's own SQLite store
  before the answer (`--db FILE`): the least a gateway that commits before its 2xx must do.
* `crm`: the `test-crm` provider's protocol (`gateway.testing.providers`), recording when
  each item arrived, so latency is measured where the message lands.
* `portal`: `gateway_fakes.bitrix24.FakePortal` with the connector active on line 1 and its
  leaky bucket (`--rate`, `--burst`; `--rate 0` for none), with a stats endpoint.

Each answers `GET /_ready` once it is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _ready(_request: Request) -> Response:
    return _json({"ok": True})


def bare_app() -> Starlette:
    async def webhook(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            parsed: Any = orjson.loads(body)
        else:
            parsed = parse_qsl(body.decode(), keep_blank_values=True)
        return JSONResponse({"ok": True, "accepted": 1 if parsed else 0, "duplicates": 0})

    return Starlette(
        routes=[
            Route("/_ready", _ready),
            Route("/webhooks/{instance}/{subpath:path}", webhook, methods=["POST"]),
        ]
    )


def floor_app(db: str) -> Starlette:
    """The bare endpoint plus the one thing a gateway may not skip: a durable write.

    Each webhook's parsed body becomes one event row through the gateway's own store
    (`SQLiteStore.ingest`: the writer thread, group commit, WAL and its fdatasync), no
    jobs, no delivery, before the answer: the least any "commit before 2xx" gateway does.
    """
    from contextlib import asynccontextmanager

    from gateway.store.base import IngestItem
    from gateway.store.sqlite import SQLiteStore

    store = SQLiteStore(db)
    keys = itertools.count(1)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    async def webhook(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            parsed: Any = orjson.loads(body)
        else:
            parsed = dict(parse_qsl(body.decode(), keep_blank_values=True))
        item = IngestItem(instance="floor", dedupe_key=str(next(keys)), event=parsed, jobs=[])
        ids = await store.ingest([item], time.time())
        return JSONResponse({"ok": True, "accepted": len(ids), "duplicates": 0})

    return Starlette(
        routes=[
            Route("/_ready", _ready),
            Route("/webhooks/{instance}/{subpath:path}", webhook, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def crm_app(delay: float = 0.0) -> Starlette:
    """The `test-crm` protocol recorder; `delay`: seconds each call takes (a remote CRM)."""
    received: list[tuple[str, str, float]] = []
    keys: set[str] = set()
    duplicates = 0
    requests = 0
    ids = itertools.count(1)

    async def send(request: Request) -> Response:
        nonlocal duplicates, requests
        requests += 1
        items = orjson.loads(await request.body())["items"]
        now = time.time()
        results = []
        for item in items:
            if item["key"] in keys:
                duplicates += 1
            keys.add(item["key"])
            received.append((item["conversation"], item.get("text", ""), now))
            results.append({"id": f"crm-{next(ids)}"})
        if delay:
            await asyncio.sleep(delay)
        return _json({"results": results})

    async def ok(_request: Request) -> Response:
        return _json({"ok": True})

    async def stats(_request: Request) -> Response:
        return _json({"count": len(received), "duplicates": duplicates, "requests": requests})

    async def records(_request: Request) -> Response:
        return _json({"received": received, "duplicates": duplicates})

    async def reset(_request: Request) -> Response:
        nonlocal duplicates, requests
        received.clear()
        keys.clear()
        duplicates = requests = 0
        return _json({"ok": True})

    return Starlette(
        routes=[
            Route("/_ready", _ready),
            Route("/send", send, methods=["POST"]),
            Route("/acks", ok, methods=["POST"]),
            Route("/statuses", ok, methods=["POST"]),
            Route("/_stats", stats),
            Route("/_records", records),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )


def portal_app(port: int, rate: float, burst: int) -> Starlette:
    from gateway_fakes.bitrix24 import FakePortal
    from gateway_fakes.bitrix24.state import Connector

    address = f"127.0.0.1:{port}"
    portal = FakePortal(
        domain=address,
        scheme="http",
        server_endpoint=f"http://{address}/rest/",
        rate=rate or None,
        burst=burst,
        token_ttl=86400,
    )
    portal.state.connectors["whatschat"] = Connector(
        id="whatschat", name="WhatsApp", icon={}, placement_handler="http://127.0.0.1:1/"
    )
    row = portal.state.status("whatschat", 1)
    row.active = row.connection = row.register = True
    pair = portal.issue_tokens()

    async def tokens(_request: Request) -> Response:
        return _json(
            {
                "access_token": pair.access_token,
                "refresh_token": pair.refresh_token,
                "client_endpoint": portal.client_endpoint,
                "server_endpoint": portal.server_endpoint,
                "member_id": portal.member_id,
                "application_token": portal.application_token,
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
            }
        )

    async def stats(request: Request) -> Response:
        if "count" in request.query_params:
            count = sum(1 for m in portal.state.messages if m.author == "client")
            return _json({"count": count, "clock": portal.clock()})
        calls = [c for c in portal.calls if c.batch_key is None]
        limited = [c for c in calls if c.error == "QUERY_LIMIT_EXCEEDED"]
        messages = [
            (m.chat_id, m.text, m.external_ids[0] if m.external_ids else "")
            for m in portal.state.messages
            if m.author == "client"
        ]
        return _json(
            {
                "requests": len(calls),
                "query_limit_exceeded": len(limited),
                "errors": sorted({str(c.error) for c in calls if c.error}),
                "messages": messages,
                "first_call": calls[0].time if calls else None,
                "last_call": calls[-1].time if calls else None,
                "clock": portal.clock(),
            }
        )

    app = Starlette(routes=[Route("/_ready", _ready), Route("/_stats", stats)])
    app.router.routes.append(Route("/_tokens", tokens))
    app.router.routes.extend(portal.app.routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "floor", "crm", "portal"])
    parser.add_argument("--db", default="floor.db", help="the floor server's SQLite file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each crm call takes")
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    elif args.kind == "floor":
        app = floor_app(args.db)
    elif args.kind == "crm":
        app = crm_app(args.delay)
    else:
        app = portal_app(args.port, args.rate, args.burst)
    # Same server settings as `gateway run` by default (its access log is off too).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info" if args.kind in ("bare", "floor") else "warning",
    )


if __name__ == "__main__":
    main()
