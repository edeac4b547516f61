"""The admin API over a real SQLite store, and the app-wide JSON error handlers."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import admin_routes, summarize_payload
from gateway.errors import BadRequest, Unauthorized, WebhookError
from gateway.http_errors import error_response, exception_handlers
from gateway.metrics import Metrics, standard_metrics
from gateway.store import open_store
from gateway.store.base import NewJob, Store

pytestmark = pytest.mark.anyio

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 10_000.0
PAYLOAD = {
    "event": {
        "kind": "message",
        "conversation_id": "79990001122@c.us",
        "native_id": "wamid.1",
        "text": "my card number is 4111 1111 1111 1111",
        "sender": {"id": "79990001122", "name": "Ann", "phone": "+79990001122"},
        "attachments": [{"kind": "image", "url": "https://x/y?token=SECRET"}],
        "extra": {"auth": {"access_token": "SECRET"}, "kind": "SECRET"},
    },
    "target": "portal.bitrix24.ru:1",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class FakeGateway:
    """The admin API's collaborator: the running gateway, reduced to what admin asks."""

    store: Store
    metrics: Metrics = field(default_factory=standard_metrics)
    admin_token: str | None = TOKEN
    clock: Callable[[], float] = lambda: NOW
    woken: list[str | None] = field(default_factory=list)

    async def instances_info(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "wa",
                "kind": "channel",
                "provider": "test-channel",
                "state": "connected",
                "detail": None,
            }
        ]

    async def routes_info(self) -> list[dict[str, Any]]:
        return [{"name": "main", "channel": "wa", "crm": "crm", "target": None}]

    async def plugins_info(self) -> list[dict[str, Any]]:
        return [{"name": "testing", "loaded": True, "error": None}]

    def wake(self, destination: str | None = None) -> None:
        self.woken.append(destination)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store("sqlite:///" + str(tmp_path / "t.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def gateway(store: Store) -> FakeGateway:
    return FakeGateway(store)


def make_app(gateway: FakeGateway) -> Starlette:
    return Starlette(routes=[admin_routes(gateway)], exception_handlers=exception_handlers())


@pytest.fixture
async def client(gateway: FakeGateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
        yield http


async def make_dead(
    store: Store,
    *,
    lane: str,
    dead_at: float,
    destination: str = "crm",
    kind: Any = "send",
    payload: Any = None,
) -> int:
    """A job that went through the store's real path to the dead-letter park."""
    job = NewJob(kind, "main", "wa", destination, lane, PAYLOAD if payload is None else payload)
    [job_id] = await store.enqueue([job], now=dead_at - 5)
    claimed = await store.claim(destination, "test", 100, 30.0, now=dead_at - 1)
    assert job_id in [j.id for j in claimed]
    await store.dead_letter(job_id, "test", "PermanentError: 470 window closed", now=dead_at)
    others = [j for j in claimed if j.id != job_id]
    await store.release("test", [j.lane for j in others], dead_at, [j.id for j in others])
    return job_id


ENDPOINTS = [
    ("GET", "/admin/instances"),
    ("GET", "/admin/routes"),
    ("GET", "/admin/plugins"),
    ("GET", "/admin/queue"),
    ("GET", "/admin/dead-letters"),
    ("GET", "/admin/jobs/1"),
    ("POST", "/admin/dead-letters/1/replay"),
    ("POST", "/admin/replay"),
]


# authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_missing_or_wrong_token_is_401(
    client: httpx.AsyncClient, gateway: FakeGateway, method: str, path: str
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        response = await client.request(method, path, headers=headers, json={"lane": "x"})
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["status"] == 401
    assert gateway.metrics.value("gateway_admin_rejected_total") == 5
    assert gateway.woken == []


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/queue", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, ""])
async def test_no_configured_token_closes_the_api(
    store: Store, method: str, path: str, token: str | None
) -> None:
    gateway = FakeGateway(store, admin_token=token)
    transport = httpx.ASGITransport(app=make_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = await http.request(method, path, headers=headers)
            assert response.status_code == 403
            message = response.json()["error"]["message"]
            assert "admin.token" in message
            assert ".secrets.toml" in message
            assert "GATEWAY_ADMIN__TOKEN" in message


# views ------------------------------------------------------------------------------------
async def test_instances_routes_plugins(client: httpx.AsyncClient) -> None:
    instances = (await client.get("/admin/instances", headers=AUTH)).json()
    assert instances["instances"][0]["name"] == "wa"
    assert instances["instances"][0]["state"] == "connected"
    routes = (await client.get("/admin/routes", headers=AUTH)).json()
    assert routes == {"routes": [{"name": "main", "channel": "wa", "crm": "crm", "target": None}]}
    plugins = (await client.get("/admin/plugins", headers=AUTH)).json()
    assert plugins["plugins"][0]["name"] == "testing"


async def test_queue_shows_store_stats(client: httpx.AsyncClient, store: Store) -> None:
    await make_dead(store, lane="crm:a", dead_at=NOW - 100)
    await store.enqueue([NewJob("send", "main", "wa", "crm", "crm:b", {})], now=NOW - 30)
    body = (await client.get("/admin/queue", headers=AUTH)).json()
    assert body["now"] == NOW
    assert body["destinations"] == [
        {
            "destination": "crm",
            "ready": 1,
            "dead": 1,
            "oldest_ready_at": NOW - 30,
            "oldest_age_seconds": 30.0,
        }
    ]


async def test_dead_letters_list_without_payloads(client: httpx.AsyncClient, store: Store) -> None:
    job_id = await make_dead(store, lane="crm:a", dead_at=NOW - 100)
    response = await client.get("/admin/dead-letters", headers=AUTH)
    assert response.status_code == 200
    [item] = response.json()["dead_letters"]
    assert {k: v for k, v in item.items() if k != "payload_summary"} == {
        "id": job_id,
        "kind": "send",
        "route": "main",
        "source": "wa",
        "destination": "crm",
        "lane": "crm:a",
        "attempts": 1,
        "last_error": "PermanentError: 470 window closed",
        "dead_at": NOW - 100,
        "created_at": NOW - 105,
        "replay_of": None,
    }
    summary = item["payload_summary"]
    assert summary["kind"] == "message"
    assert summary["native_id"] == "wamid.1"
    assert summary["conversation_id"] == "79990001122@c.us"
    assert summary["target"] == "portal.bitrix24.ru:1"
    assert summary["text_length"] == len(PAYLOAD["event"]["text"])  # type: ignore[index]
    assert summary["attachments"] == 1
    assert "4111" not in response.text
    assert "SECRET" not in response.text
    assert "+79990001122" not in response.text


async def test_dead_letters_filters_and_limit(client: httpx.AsyncClient, store: Store) -> None:
    a1 = await make_dead(store, lane="crm:a", dead_at=NOW - 300)
    b1 = await make_dead(store, lane="crm:b", dead_at=NOW - 200)
    w1 = await make_dead(store, lane="wa:c", destination="wa", dead_at=NOW - 100)

    async def ids(query: str) -> list[int]:
        response = await client.get(f"/admin/dead-letters?{query}", headers=AUTH)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["dead_letters"]]

    assert await ids("") == [a1, b1, w1]
    assert await ids("destination=crm") == [a1, b1]
    assert await ids("lane=crm:b") == [b1]
    assert await ids("destination=wa&lane=crm:b") == []
    assert await ids("limit=2") == [a1, b1]
    assert await ids("destination=&lane=&limit=") == [a1, b1, w1]


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1001", "1.5"])
async def test_bad_limit_is_422_naming_it(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(f"/admin/dead-letters?limit={limit}", headers=AUTH)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["parameter"] == "limit"
    assert "limit" in error["message"]


async def test_job_by_id(client: httpx.AsyncClient, store: Store) -> None:
    job_id = await make_dead(store, lane="crm:a", dead_at=NOW - 100)
    response = await client.get(f"/admin/jobs/{job_id}", headers=AUTH)
    assert response.status_code == 200
    job = response.json()["job"]
    assert job["id"] == job_id
    assert job["state"] == "dead"
    assert "payload" not in job
    assert job["payload_summary"]["native_id"] == "wamid.1"
    assert "SECRET" not in response.text

    missing = await client.get("/admin/jobs/999", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no job 999"
    for bad in ("abc", "0", "-3"):
        response = await client.get(f"/admin/jobs/{bad}", headers=AUTH)
        assert response.status_code == 422
        assert response.json()["error"]["parameter"] == "id"


# replay -----------------------------------------------------------------------------------
async def test_replay_one(client: httpx.AsyncClient, store: Store, gateway: FakeGateway) -> None:
    job_id = await make_dead(store, lane="wa:a", destination="wa", dead_at=NOW - 100)
    response = await client.post(f"/admin/dead-letters/{job_id}/replay", headers=AUTH)
    assert response.status_code == 200
    [pair] = response.json()["jobs"]
    assert response.json()["replayed"] == 1 and pair["job"] == job_id
    assert gateway.woken == ["wa"]
    # The job went back to the tail of its lane under a new id, which names the old one.
    assert await store.get_job(job_id) is None
    [job] = await store.claim("wa", "w", 10, 60.0, NOW)
    assert (job.state, job.attempts, job.lane) == ("ready", 0, "wa:a")
    assert (job.id, job.replay_of) == (pair["new_job"], job_id)

    again = await client.post(f"/admin/dead-letters/{job_id}/replay", headers=AUTH)
    assert again.status_code == 404
    missing = await client.post("/admin/dead-letters/999/replay", headers=AUTH)
    assert missing.status_code == 404
    bad = await client.post("/admin/dead-letters/x/replay", headers=AUTH)
    assert bad.status_code == 422
    assert gateway.woken == ["wa"]


async def test_replay_by_job_ids(
    client: httpx.AsyncClient, store: Store, gateway: FakeGateway
) -> None:
    a = await make_dead(store, lane="crm:a", dead_at=NOW - 300)
    b = await make_dead(store, lane="crm:b", dead_at=NOW - 200)
    c = await make_dead(store, lane="crm:c", dead_at=NOW - 100)
    response = await client.post("/admin/replay", headers=AUTH, json={"job_ids": [a, c, a]})
    assert response.json()["replayed"] == 2
    assert [p["job"] for p in response.json()["jobs"]] == [a, c]
    assert gateway.woken == [None]
    remaining = await store.dead_letters()
    assert [j.id for j in remaining] == [b]


async def test_replay_by_lane(client: httpx.AsyncClient, store: Store) -> None:
    await make_dead(store, lane="crm:a", dead_at=NOW - 300)
    b = await make_dead(store, lane="crm:b", dead_at=NOW - 200)
    response = await client.post("/admin/replay", headers=AUTH, json={"lane": "crm:a"})
    assert response.json()["replayed"] == 1
    assert [j.id for j in await store.dead_letters()] == [b]


@pytest.mark.parametrize(
    ("selector", "left"),
    [
        ({"since": NOW - 250}, [0]),
        ({"until": NOW - 250}, [1, 2]),
        ({"since": NOW - 250, "until": NOW - 150}, [0, 2]),
        ({"since": "1970-01-01T02:42:30Z"}, [0]),  # NOW - 250 in ISO 8601
        ({"since": "1970-01-01T02:42:30"}, [0]),  # naive means UTC
        ({"until": "1970-01-01T05:42:30+03:00"}, [1, 2]),
    ],
)
async def test_replay_by_time(
    client: httpx.AsyncClient, store: Store, selector: dict[str, Any], left: list[int]
) -> None:
    ids = [await make_dead(store, lane=f"crm:{i}", dead_at=NOW - 300 + 100 * i) for i in range(3)]
    response = await client.post("/admin/replay", headers=AUTH, json=selector)
    assert response.status_code == 200, response.text
    assert response.json()["replayed"] == 3 - len(left)
    assert [j.id for j in await store.dead_letters()] == [ids[i] for i in left]


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({}, "body"),
        ({"lane": "a", "job_ids": [1]}, "body"),
        ({"lane": "a", "since": 1}, "body"),
        ({"job_ids": []}, "job_ids"),
        ({"job_ids": [1, "2"]}, "job_ids"),
        ({"job_ids": [True]}, "job_ids"),
        ({"job_ids": [0]}, "job_ids"),
        ({"job_ids": 5}, "job_ids"),
        ({"lane": ""}, "lane"),
        ({"lane": 3}, "lane"),
        ({"since": "yesterday"}, "since"),
        ({"until": [1]}, "until"),
        ({"since": None}, "since"),
        ({"since": None, "until": None}, "since"),
        ({"since": 200, "until": 100}, "until"),
        ({"lane": "a", "destination": "crm"}, "destination"),
        ([1, 2], "body"),
        ("lane", "body"),
    ],
)
async def test_replay_selector_validation(
    client: httpx.AsyncClient,
    store: Store,
    gateway: FakeGateway,
    body: Any,
    parameter: str,
) -> None:
    await make_dead(store, lane="crm:a", dead_at=NOW - 100)
    response = await client.post("/admin/replay", headers=AUTH, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["parameter"] == parameter
    assert gateway.woken == []
    assert len(await store.dead_letters()) == 1


@pytest.mark.parametrize("body", [b"lane=x", b"[" * 60_000])
async def test_replay_needs_json(client: httpx.AsyncClient, body: bytes) -> None:
    # The second: nested past the parser's recursion limit (found by the fuzz suite).
    response = await client.post("/admin/replay", headers=AUTH, content=body)
    assert response.status_code == 422
    assert response.json()["error"]["parameter"] == "body"


async def test_unknown_admin_path_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/admin/nope", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == 404
    wrong = await client.delete("/admin/queue", headers=AUTH)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["status"] == 405
    assert "GET" in wrong.headers["allow"]


def test_summarize_payload_of_odd_shapes() -> None:
    assert summarize_payload([1, 2]) == {"bytes": 6, "type": "list"}
    # Long ids are left out rather than cut, and text is only measured.
    payload = {"event": {"text": "x" * 500, "native_id": "y" * 300}}
    assert summarize_payload(payload) == {
        "bytes": len(json.dumps(payload)),
        "keys": ["event"],
        "text_length": 500,
    }


# http_errors ------------------------------------------------------------------------------
async def boom(request: Request) -> Response:
    raise RuntimeError("db password is hunter2")


async def refuse(request: Request) -> Response:
    kind = request.query_params["kind"]
    if kind == "bad":
        raise BadRequest("payload is not JSON")
    if kind == "auth":
        raise Unauthorized("bad signature")
    if kind == "big":
        raise WebhookError("body larger than 10 bytes", status=413)
    if kind == "teapot":
        raise HTTPException(418, "short and stout", headers={"X-Pot": "1"})
    if kind == "empty":
        raise HTTPException(304)
    return error_response(409, "conflict", job_id=7)


@pytest.fixture
async def errors_client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(
        routes=[Route("/boom", boom), Route("/refuse", refuse)],
        exception_handlers=exception_handlers(),
    )
    # Starlette re-raises after sending the 500 so servers log it; keep the response here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
        yield http


async def test_unhandled_error_is_json_500_without_details(
    errors_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.http"):
        response = await errors_client.get("/boom?token=abc")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "internal error"
    assert error["status"] == 500
    assert len(error["request_id"]) >= 16
    assert response.headers["x-request-id"] == error["request_id"]
    assert "hunter2" not in response.text
    [record] = [r for r in caplog.records if r.name == "gateway.http"]
    # The traceback is logged for the operator (as redacted text, as in production).
    assert record.exc_text is not None and "hunter2" in record.exc_text
    assert error["request_id"] in record.getMessage()


async def test_caller_request_id_is_reused_when_sane(errors_client: httpx.AsyncClient) -> None:
    response = await errors_client.get("/boom", headers={"X-Request-ID": "abc-123"})
    assert response.json()["error"]["request_id"] == "abc-123"
    odd = await errors_client.get("/boom", headers={"X-Request-ID": "<script>"})
    assert odd.json()["error"]["request_id"] != "<script>"


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("bad", 400, "payload is not JSON"),
        ("auth", 401, "bad signature"),
        ("big", 413, "body larger than 10 bytes"),
        ("teapot", 418, "short and stout"),
    ],
)
async def test_refusals_are_json(
    errors_client: httpx.AsyncClient, kind: str, status: int, message: str
) -> None:
    response = await errors_client.get(f"/refuse?kind={kind}")
    assert response.status_code == status
    assert response.json() == {"error": {"status": status, "message": message}}


async def test_http_exception_headers_and_bodyless_statuses(
    errors_client: httpx.AsyncClient,
) -> None:
    teapot = await errors_client.get("/refuse?kind=teapot")
    assert teapot.headers["x-pot"] == "1"
    empty = await errors_client.get("/refuse?kind=empty")
    assert empty.status_code == 304
    assert empty.content == b""


async def test_error_response_extra_fields(errors_client: httpx.AsyncClient) -> None:
    response = await errors_client.get("/refuse?kind=other")
    assert response.json() == {"error": {"status": 409, "message": "conflict", "job_id": 7}}
    not_found = await errors_client.get("/nowhere")
    assert not_found.json() == {"error": {"status": 404, "message": "Not Found"}}
