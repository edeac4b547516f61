"""A fake messaging service that records what the test providers send it.

It speaks the small JSON protocol of `gateway.testing.providers`: `POST /send` with a batch
of items, `POST /find` (which of these keys arrived, and as what id), `POST /acks`,
`POST /statuses`. Sends carry an idempotency key; the recorder keeps
the first effect of each key, like a destination that dedupes, so tests can tell "delivered
twice" (two keys, or one key with `dedupe=False`) from "retried" (one key, several calls).
Knobs: fail the next calls with a status, or hold them until the test releases them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: `fail_next(status=DROP)` drops the connection instead of answering.
DROP = 0


@dataclass(slots=True)
class Received:
    """One item the recorder accepted, in arrival order."""

    key: str
    conversation: str
    kind: str
    text: str
    native_id: str
    item: dict[str, Any]


@dataclass(slots=True)
class Recorder:
    """The fake service; `app` is its ASGI app. `dedupe=False` counts every call's effect."""

    name: str = "recorder"
    dedupe: bool = True
    received: list[Received] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)
    duplicates: int = 0
    #: Answer this many `/find` calls with 503 (the destination cannot tell for now).
    find_failures: int = 0
    _by_key: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _failures: list[tuple[int, str | None]] = field(default_factory=list)
    _gates: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Event]] = field(
        default_factory=list
    )
    _arrived: asyncio.Condition | None = None
    #: Set once a send is being held by `hold()`: a request is in flight at that moment.
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    #: How many sends have been held so far (each is a request in flight while held).
    held: int = 0
    app: Starlette = field(init=False)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/send", self._send, methods=["POST"]),
                Route("/find", self._find, methods=["POST"]),
                Route("/acks", self._acks, methods=["POST"]),
                Route("/statuses", self._statuses, methods=["POST"]),
                Route("/recorded", self._recorded, methods=["GET"]),
            ]
        )

    # knobs -------------------------------------------------------------------------
    def fail_next(
        self, count: int = 1, status: int = 503, *, conversation: str | None = None
    ) -> None:
        """Answer the next `count` sends (of `conversation`, if given) with HTTP `status`."""
        self._failures.extend([(status, conversation)] * count)

    def hold(self, predicate: Callable[[dict[str, Any]], bool]) -> asyncio.Event:
        """Hold sends containing an item that matches until the returned event is set."""
        gate = asyncio.Event()
        self._gates.append((predicate, gate))
        return gate

    # views -------------------------------------------------------------------------
    def texts(self, conversation: str | None = None) -> list[str]:
        return [r.text for r in self.received if conversation in (None, r.conversation)]

    def conversations(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for r in self.received:
            grouped.setdefault(r.conversation, []).append(r.text)
        return grouped

    async def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds, woken by each arrival (no polling sleeps)."""
        condition = self._condition()
        async with asyncio.timeout(timeout), condition:
            await condition.wait_for(lambda: predicate(self))

    async def wait_count(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_for(lambda r: len(r.received) >= count, timeout)

    def _condition(self) -> asyncio.Condition:
        if self._arrived is None:
            self._arrived = asyncio.Condition()
        return self._arrived

    async def _notify(self) -> None:
        condition = self._condition()
        async with condition:
            condition.notify_all()

    # endpoints ---------------------------------------------------------------------
    async def _send(self, request: Request) -> Response:
        body = await request.json()
        items: list[dict[str, Any]] = body["items"]
        for predicate, gate in list(self._gates):
            if any(predicate(item) for item in items):
                self.holding.set()
                self.held += 1
                await self._notify()
                await gate.wait()
        for index, (status, conversation) in enumerate(self._failures):
            if conversation is None or any(i["conversation"] == conversation for i in items):
                del self._failures[index]
                self.calls.append(("send", status))
                await self._notify()
                if status == DROP:
                    # As if the connection died after the request left: the sender cannot
                    # know whether it took effect (it did not, here).
                    raise httpx.ReadError("connection dropped by the recorder")
                return JSONResponse({"error": f"injected {status}"}, status_code=status)
        results: list[dict[str, Any]] = []
        for item in items:
            key = item["key"]
            if self.dedupe and key in self._by_key:
                self.duplicates += 1
                results.append({"id": self._by_key[key]})
                continue
            if key in self._by_key:
                self.duplicates += 1
            if str(item.get("conversation", "")).startswith("reject-"):
                results.append({"error": {"code": "rejected", "text": "recipient refuses"}})
                continue
            native_id = f"{self.name}-{next(self._ids)}"
            self._by_key[key] = native_id
            self.received.append(
                Received(
                    key=key,
                    conversation=item["conversation"],
                    kind=item["kind"],
                    text=item.get("text", ""),
                    native_id=native_id,
                    item=item,
                )
            )
            results.append({"id": native_id})
        self.calls.append(("send", 200))
        await self._notify()
        return JSONResponse({"results": results})

    async def _find(self, request: Request) -> Response:
        """Whether each key arrived: `{"id": ...}` or `{"missing": true}`, in order."""
        body = await request.json()
        if self.find_failures > 0:
            self.find_failures -= 1
            self.calls.append(("find", 503))
            return JSONResponse({"error": "injected 503"}, status_code=503)
        self.calls.append(("find", 200))
        results = [
            {"id": self._by_key[key]} if key in self._by_key else {"missing": True}
            for key in body["keys"]
        ]
        return JSONResponse({"results": results})

    async def _acks(self, request: Request) -> Response:
        body = await request.json()
        self.acks.extend(body["items"])
        self.calls.append(("acks", 200))
        await self._notify()
        return JSONResponse({"ok": True})

    async def _statuses(self, request: Request) -> Response:
        body = await request.json()
        self.statuses.extend(body["items"])
        self.calls.append(("statuses", 200))
        await self._notify()
        return JSONResponse({"ok": True})

    async def _recorded(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "received": [
                    {
                        "key": r.key,
                        "conversation": r.conversation,
                        "text": r.text,
                        "id": r.native_id,
                    }
                    for r in self.received
                ],
                "duplicates": self.duplicates,
                "acks": self.acks,
                "statuses": self.statuses,
            }
        )
