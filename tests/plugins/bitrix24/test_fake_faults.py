"""The fake portal's leaky bucket and every fault knob."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.testing import ManualClock

CLIENT = {
    "user": {"id": "7999"},
    "message": {"id": "wamid.1", "text": "Hello"},
    "chat": {"id": "7999"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def portal(clock: ManualClock) -> FakePortal:
    return FakePortal(clock=clock, rate=1.0, burst=3)


@pytest.fixture
async def rest(portal: FakePortal) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=portal.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://acme.bitrix24.com"
    ) as client:
        yield client


@pytest.fixture
def token(portal: FakePortal) -> str:
    return portal.issue_tokens().access_token


async def info(rest: httpx.AsyncClient, token: str) -> httpx.Response:
    return await rest.post("/rest/app.info", json={"auth": token})


@pytest.mark.anyio
async def test_leaky_bucket_refuses_over_burst_and_drains_with_time(
    portal: FakePortal, rest: httpx.AsyncClient, token: str, clock: ManualClock
) -> None:
    assert [(await info(rest, token)).status_code for _ in range(3)] == [200, 200, 200]
    refused = await info(rest, token)
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "QUERY_LIMIT_EXCEEDED",
        "error_description": "Too many requests",
    }
    clock.advance(1.0)
    assert [(await info(rest, token)).status_code for _ in range(2)] == [200, 503]
    clock.advance(3.0)
    # A batch of many commands is one request for the bucket.
    cmd = {f"c{i}": "app.info" for i in range(10)}
    batch = await rest.post("/rest/batch", json={"cmd": cmd, "auth": token})
    assert batch.status_code == 200
    assert portal.bucket is not None and portal.bucket.level == pytest.approx(1.0)


@pytest.mark.anyio
async def test_rate_none_disables_the_bucket(token: str) -> None:
    portal = FakePortal(rate=None)
    pair = portal.issue_tokens()
    transport = httpx.ASGITransport(app=portal.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://acme.bitrix24.com") as c:
        codes = {(await info(c, pair.access_token)).status_code for _ in range(60)}
    assert codes == {200}


@pytest.mark.anyio
async def test_fail_next_answers_like_the_real_failures(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    portal.faults.fail_next(kind="503")
    portal.faults.fail_next(kind="500")
    portal.faults.fail_next(kind="html502")
    portal.faults.fail_next(kind="invalid_token")
    portal.faults.fail_next(kind="insufficient_scope")
    answers = [await info(rest, token) for _ in range(5)]
    assert [a.status_code for a in answers] == [503, 500, 502, 401, 403]
    assert answers[0].json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert answers[1].json()["error"] == "INTERNAL_SERVER_ERROR"
    assert answers[2].headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in answers[2].text
    assert answers[3].json()["error"] == "invalid_token"
    assert answers[4].json()["error"] == "insufficient_scope"
    assert [c.status for c in portal.calls] == [503, 500, 502, 401, 403]
    assert (await info(rest, token)).status_code == 200


@pytest.mark.anyio
async def test_fail_next_matches_method_and_count(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    portal.faults.fail_next("imopenlines.config.get", count=2, kind="500")
    assert (await info(rest, token)).status_code == 200
    get = {"CONFIG_ID": 1, "auth": token}
    codes = [
        (await rest.post("/rest/imopenlines.config.get", json=get)).status_code for _ in range(3)
    ]
    assert codes == [500, 500, 200]
    with pytest.raises(ValueError, match="unknown fault kind"):
        portal.faults.fail_next(kind="teapot")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_expired_token_fault_really_expires_the_token(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    portal.faults.fail_next("app.info", kind="expired_token")
    first = await info(rest, token)
    assert (first.status_code, first.json()["error"]) == (401, "expired_token")
    assert (await info(rest, token)).json()["error"] == "expired_token"
    assert (await info(rest, portal.issue_tokens().access_token)).status_code == 200


@pytest.mark.anyio
async def test_operation_time_limit_blocks_one_method_until_reset(
    portal: FakePortal, rest: httpx.AsyncClient, token: str, clock: ManualClock
) -> None:
    portal.faults.block_method("app.info", seconds=120)
    blocked = await info(rest, token)
    assert blocked.status_code == 429
    body = blocked.json()
    assert body["error"] == "OPERATION_TIME_LIMIT"
    assert body["error_description"] == "Method is blocked due to operation time limit."
    assert body["time"]["operating_reset_at"] == int(portal.now() + 120)
    other = await rest.post("/rest/imopenlines.config.get", json={"CONFIG_ID": 1, "auth": token})
    assert other.status_code == 200
    inside = await rest.post("/rest/batch", json={"cmd": {"a": "app.info"}, "auth": token})
    assert inside.json()["result"]["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    clock.advance(121)
    assert (await info(rest, token)).status_code == 200

    portal.faults.fail_next(kind="429")
    once = await info(rest, token)
    assert once.status_code == 429 and once.json()["time"]["operating_reset_at"] > portal.now()


@pytest.mark.anyio
async def test_redirect_fault_and_domain_move(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    portal.faults.fail_next(kind="redirect")
    bounced = await rest.get("/rest/app.info", params={"auth": token})
    assert bounced.status_code == 302
    assert bounced.headers["location"] == f"https://acme.bitrix24.com/rest/app.info?auth={token}"

    portal.move_domain("acme-new.bitrix24.com")
    assert portal.client_endpoint == "https://acme-new.bitrix24.com/rest/"
    moved = await rest.post("/rest/app.info", json={"auth": token})
    assert moved.status_code == 302
    assert moved.headers["location"] == "https://acme-new.bitrix24.com/rest/app.info"
    assert portal.calls[-1].status == 302
    follow = await rest.post(moved.headers["location"], json={"auth": token})
    assert follow.status_code == 200


@pytest.mark.anyio
async def test_timeout_fault_takes_effect_but_answers_late(
    portal: FakePortal, rest: httpx.AsyncClient, token: str
) -> None:
    register = {
        "ID": "acme_wa",
        "NAME": "A",
        "ICON": {"DATA_IMAGE": "data:x"},
        "PLACEMENT_HANDLER": "https://gw.example.com/s",
        "auth": token,
    }
    await rest.post("/rest/imconnector.register", json=register)
    activate = {"CONNECTOR": "acme_wa", "LINE": 1, "ACTIVE": 1, "auth": token}
    await rest.post("/rest/imconnector.activate", json=activate)
    portal.faults.fail_next("imconnector.send.messages", kind="timeout", delay=30.0)
    send = {"CONNECTOR": "acme_wa", "LINE": 1, "MESSAGES": [CLIENT], "auth": token}
    with anyio.move_on_after(0.05) as scope:
        await rest.post("/rest/imconnector.send.messages", json=send)
    assert scope.cancelled_caught
    assert [m.text for m in portal.messages()] == ["Hello"]  # the ambiguous case


@pytest.mark.anyio
async def test_slow_holds_answers(portal: FakePortal, rest: httpx.AsyncClient, token: str) -> None:
    portal.faults.slow(30.0, method="app.info")
    with anyio.move_on_after(0.05) as scope:
        await info(rest, token)
    assert scope.cancelled_caught
    get = {"CONFIG_ID": 1, "auth": token}
    assert (await rest.post("/rest/imopenlines.config.get", json=get)).status_code == 200
    portal.faults.slow(0, method="app.info")
    assert (await info(rest, token)).status_code == 200


@pytest.mark.anyio
async def test_oauth_endpoint_faults(portal: FakePortal) -> None:
    pair = portal.issue_tokens()
    query = {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": pair.refresh_token,
    }
    portal.faults.fail_next(kind="503")  # REST-only: must not hit the token endpoint
    portal.faults.fail_next("oauth.token", kind="html502")
    transport = httpx.ASGITransport(app=portal.oauth_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://oauth.bitrix.info") as c:
        assert (await c.get("/oauth/token/", params=query)).status_code == 502
        assert (await c.get("/oauth/token/", params=query)).status_code == 200
    with pytest.raises(ValueError, match="OAuth endpoint"):
        portal.faults.fail_next("oauth.token", kind="expired_token")
    portal.faults.clear()
    assert portal.faults.queued == []
