"""The REST client against the fake portal: tokens, limits, errors, domain moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from gateway_bitrix24.errors import classify, scrub
from gateway_bitrix24.limits import Bucket, Limits
from gateway_bitrix24.oauth import DEFAULT_OAUTH_URL, OAuthClient, Tokens
from gateway_bitrix24.records import NEEDS_REINSTALL, UNPAID, PortalRecord, PortalStore
from gateway_bitrix24.rest import RestClient, build_query
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.bitrix24.testing import ManualClock

from gateway.errors import AmbiguousError, PermanentError, TemporaryError
from gateway.models import JSON

pytestmark = pytest.mark.anyio

SEND = "imconnector.send.messages"
CONNECTOR = {
    "ID": "acme_wa",
    "NAME": "Acme WhatsApp",
    "ICON": {"DATA_IMAGE": "data:image/svg+xml;base64,PHN2Zy8+"},
    "PLACEMENT_HANDLER": "https://gw.example.com/webhooks/b24/placement",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class MemoryState:
    """A `ProviderState` in a dict, with per-key asyncio locks."""

    def __init__(self) -> None:
        self.data: dict[str, JSON] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    generation = 0

    async def changed(self) -> None:
        self.generation += 1

    async def get(self, key: str) -> JSON | None:
        return self.data.get(key)

    async def put(self, key: str, value: JSON) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]:
        return [(k, v) for k, v in sorted(self.data.items()) if k.startswith(prefix)]

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        return self.locks.setdefault(key, asyncio.Lock())


class Network(httpx.AsyncBaseTransport):
    """Routes by host to ASGI apps; can fail the next request after it reached the app."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.time_out_after_send = 0
        self.oauth_requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.apps.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.host.startswith("oauth."):
            self.oauth_requests += 1
        response = await transport.handle_async_request(request)
        if self.time_out_after_send and request.url.path.startswith("/rest/"):
            self.time_out_after_send -= 1
            raise httpx.ReadTimeout("no answer in time", request=request)
        return response


@dataclass
class Kit:
    portal: FakePortal
    network: Network
    store: PortalStore
    tokens: Tokens
    limits: Limits
    rest: RestClient
    clock: ManualClock
    slept: list[float] = field(default_factory=list)

    @property
    def member(self) -> str:
        return self.portal.member_id

    async def record(self) -> PortalRecord:
        record = await self.store.get(self.member, fresh=True)
        assert record is not None
        return record

    def used_refresh_tokens(self) -> int:
        return sum(1 for token in self.portal.tokens.refresh.values() if token.used)


@contextlib.asynccontextmanager
async def kit(
    *,
    rate: float = 100.0,
    burst: int = 100,
    portal_rate: float | None = None,
    portal_burst: int = 50,
) -> AsyncIterator[Kit]:
    clock = ManualClock()
    portal = FakePortal(clock=clock, rate=portal_rate, burst=portal_burst)
    portal.add_line("Second")
    network = Network({"acme.bitrix24.com": portal.app, "oauth.bitrix.info": portal.oauth_app})
    async with httpx.AsyncClient(transport=network) as http:
        store = PortalStore(MemoryState())
        pair = portal.issue_tokens()
        await store.put(
            PortalRecord(
                member_id=portal.member_id,
                client_endpoint=portal.client_endpoint,
                server_endpoint=portal.server_endpoint,
                access_token=pair.access_token,
                refresh_token=pair.refresh_token,
                application_token=portal.application_token,
            )
        )
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.advance(seconds)

        limits = Limits(rate, burst, clock=clock, sleep=sleep)
        tokens = Tokens(store, OAuthClient(http, portal.client_id, portal.client_secret))
        rest = RestClient(http, store, tokens, limits)
        yield Kit(portal, network, store, tokens, limits, rest, clock, slept)


async def ready_line(k: Kit, line: int = 1) -> None:
    await k.rest.call(k.member, "imconnector.register", CONNECTOR)
    await k.rest.call(
        k.member, "imconnector.activate", {"CONNECTOR": "acme_wa", "LINE": line, "ACTIVE": 1}
    )


def client_message(n: int) -> dict[str, Any]:
    return {
        "user": {"id": "7999"},
        "message": {"id": f"m{n}", "text": f"text {n}"},
        "chat": {"id": "7999"},
    }


async def test_two_concurrent_calls_after_expiry_share_one_refresh() -> None:
    async with kit() as k:
        k.portal.expire_tokens()
        before = k.used_refresh_tokens()
        first, second = await asyncio.gather(
            k.rest.call(k.member, "app.info"), k.rest.call(k.member, "app.info")
        )
        assert first.result["INSTALLED"] is True and second.result["INSTALLED"] is True
        assert k.tokens.refreshes == 1 and k.network.oauth_requests == 1
        assert k.used_refresh_tokens() == before + 1
        record = await k.record()
        assert record.access_token != k.portal.calls[0].token  # the new pair was stored


async def test_expired_token_is_refreshed_and_the_call_repeated_once() -> None:
    async with kit() as k:
        k.portal.faults.fail_next("app.info", kind="expired_token")
        reply = await k.rest.call(k.member, "app.info")
        assert reply.result["CODE"] == "vendor.whatschat"
        assert [c.error for c in k.portal.calls_to("app.info")] == ["expired_token", None]
        assert k.tokens.refreshes == 1


async def test_a_token_refused_after_refresh_is_permanent() -> None:
    async with kit() as k:
        k.portal.faults.fail_next("app.info", kind="invalid_token", count=2)
        with pytest.raises(PermanentError) as caught:
            await k.rest.call(k.member, "app.info")
        assert caught.value.code == "invalid_token"
        assert k.tokens.refreshes == 1


async def test_a_burnt_refresh_token_means_reinstall() -> None:
    async with kit() as k:
        record = await k.record()
        k.portal.tokens.use_refresh(record.refresh_token)  # used by someone else
        k.portal.expire_tokens()
        with pytest.raises(PermanentError) as caught:
            await k.rest.call(k.member, "app.info")
        assert caught.value.code == "invalid_grant"
        assert "reinstall" in caught.value.text
        assert (await k.record()).problem == NEEDS_REINSTALL
        calls = len(k.portal.calls)
        with pytest.raises(PermanentError) as again:
            await k.rest.call(k.member, "app.info")
        assert again.value.code == "NEEDS_REINSTALL" and len(k.portal.calls) == calls


async def test_payment_required_marks_the_portal_unpaid() -> None:
    async with kit() as k:
        k.portal.faults.payment_required = True
        k.portal.expire_tokens()
        with pytest.raises(PermanentError) as caught:
            await k.rest.call(k.member, "app.info")
        assert caught.value.code == "PAYMENT_REQUIRED"
        assert (await k.record()).problem == UNPAID


async def test_query_limit_backs_off_and_retries_the_refused_request() -> None:
    async with kit(rate=2.0, burst=50) as k:
        k.portal.faults.fail_next("app.info", kind="503")
        await k.rest.call(k.member, "app.info")
        assert [c.status for c in k.portal.calls_to("app.info")] == [503, 200]
        assert k.slept and k.slept[0] == pytest.approx(0.5)  # one slot at 2 req/s
        k.portal.faults.fail_next("app.info", kind="503", count=5)
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, "app.info")
        assert caught.value.code == "QUERY_LIMIT_EXCEEDED" and caught.value.retry_after


async def test_client_bucket_keeps_under_the_portal_limit() -> None:
    async with kit(rate=2.0, burst=5, portal_rate=2.0, portal_burst=5) as k:
        for _ in range(5):
            await k.rest.call(k.member, "app.info")
        assert k.slept == []
        k.limits.max_wait = 0.0
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, "app.info")
        assert caught.value.code == "RATE_LIMITED" and caught.value.retry_after == pytest.approx(
            0.5
        )
        k.limits.max_wait = 1.0
        await k.rest.call(k.member, "app.info")  # sleeps half a second instead
        assert k.slept == [pytest.approx(0.5)]
        assert all(c.status == 200 for c in k.portal.calls)


async def test_operation_time_limit_pauses_that_method_only() -> None:
    async with kit() as k:
        await ready_line(k)
        k.portal.faults.block_method(SEND, seconds=120)
        params = {"CONNECTOR": "acme_wa", "LINE": 1, "MESSAGES": [client_message(1)]}
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, SEND, params)
        assert caught.value.code == "OPERATION_TIME_LIMIT"
        assert caught.value.retry_after == pytest.approx(120, abs=1)
        calls = len(k.portal.calls)
        with pytest.raises(TemporaryError):
            await k.rest.call(k.member, SEND, params)
        assert len(k.portal.calls) == calls  # not even tried
        await k.rest.call(k.member, "app.info")  # other methods still work
        k.clock.advance(121)
        await k.rest.call(k.member, SEND, params)
        assert [m.text for m in k.portal.messages()] == ["text 1"]


@pytest.mark.parametrize("kind", ["html502", "500"])
async def test_server_errors_are_temporary(kind: Any) -> None:
    async with kit() as k:
        k.portal.faults.fail_next("app.info", kind=kind)
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, "app.info")
        assert not isinstance(caught.value, AmbiguousError)


async def test_no_answer_after_sending_is_ambiguous_for_sends_only() -> None:
    async with kit() as k:
        await ready_line(k)
        params = {"CONNECTOR": "acme_wa", "LINE": 1, "MESSAGES": [client_message(1)]}
        k.network.time_out_after_send = 1
        with pytest.raises(AmbiguousError):
            await k.rest.call(k.member, SEND, params, ambiguous=True)
        assert len(k.portal.messages()) == 1  # it did take effect: never resend blindly
        k.network.time_out_after_send = 1
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, "app.info")
        assert not isinstance(caught.value, AmbiguousError)


async def test_unreachable_portal_is_plain_temporary() -> None:
    async with kit() as k:
        k.network.apps.pop("acme.bitrix24.com")
        with pytest.raises(TemporaryError) as caught:
            await k.rest.call(k.member, SEND, {}, ambiguous=True)
        assert not isinstance(caught.value, AmbiguousError)
        assert caught.value.code == "UNREACHABLE"


async def test_a_renamed_portal_is_followed_and_stored() -> None:
    async with kit() as k:
        k.portal.move_domain("acme-new.bitrix24.com")
        k.network.apps["acme-new.bitrix24.com"] = httpx.ASGITransport(app=k.portal.app)
        reply = await k.rest.call(k.member, "app.info")
        assert reply.result["INSTALLED"] is True
        assert (await k.record()).client_endpoint == "https://acme-new.bitrix24.com/rest/"
        assert [c.status for c in k.portal.calls_to("app.info")] == [302, 200]


async def test_batch_reports_each_command() -> None:
    async with kit() as k:
        await ready_line(k)
        bind = {"event": "ONIMCONNECTORMESSAGEADD", "handler": "https://gw.example.com/e"}
        await k.rest.call(k.member, "event.bind", bind)
        reply = await k.rest.batch(
            k.member,
            {
                "dup": ("event.bind", bind),
                "ok": ("imconnector.status", {"CONNECTOR": "acme_wa", "LINE": 1}),
                "send": (
                    SEND,
                    {"CONNECTOR": "acme_wa", "LINE": 1, "MESSAGES": [client_message(2)]},
                ),
            },
        )
        assert reply.results["ok"]["STATUS"] is True
        assert reply.results["send"]["SUCCESS"] is True
        assert isinstance(reply.errors["dup"], PermanentError)
        assert "already binded" in reply.errors["dup"].text
        assert len([c for c in k.portal.calls if c.batch_key is None]) == 4


def test_build_query_is_php_http_build_query() -> None:
    query = build_query({"A": {"b": [1, True, None], "c": "x y&z"}, "D": False})
    assert query == "A%5Bb%5D%5B0%5D=1&A%5Bb%5D%5B1%5D=1&A%5Bc%5D=x%20y%26z&D=0"


def test_bucket_schedule() -> None:
    clock = ManualClock(0.0)
    bucket = Bucket(2.0, 3, clock)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.1) is None and bucket.wait_time() == pytest.approx(0.5)
    assert bucket.reserve(1.0) == pytest.approx(0.5)
    clock.advance(10)
    assert bucket.level == 0 and bucket.reserve(0.0) == 0.0
    bucket.saturate()
    assert bucket.wait_time() == pytest.approx(0.5)


def test_oauth_url_never_follows_an_unknown_server_endpoint() -> None:
    oauth = OAuthClient(httpx.AsyncClient(), "id", "secret")
    assert (
        oauth.token_url("https://oauth.bitrix24.tech/rest/")
        == "https://oauth.bitrix24.tech/oauth/token/"
    )
    assert oauth.token_url("https://evil.example/rest/") == DEFAULT_OAUTH_URL
    assert oauth.token_url(None) == DEFAULT_OAUTH_URL
    fixed = OAuthClient(
        httpx.AsyncClient(), "id", "secret", "https://oauth.corp.example/oauth/token/"
    )
    assert (
        fixed.token_url("https://oauth.bitrix24.tech/rest/")
        == "https://oauth.corp.example/oauth/token/"
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("QUERY_LIMIT_EXCEEDED", 503, TemporaryError),
        ("OPERATION_TIME_LIMIT", 429, TemporaryError),
        ("OVERLOAD_LIMIT", 503, TemporaryError),
        ("INTERNAL_SERVER_ERROR", 500, TemporaryError),
        ("SOMETHING_NEW", 502, TemporaryError),
        ("NOT_ACTIVE_LINE", 400, PermanentError),
        ("ERROR_ARGUMENT", 400, PermanentError),
        ("insufficient_scope", 403, PermanentError),
        ("WRONG_AUTH_TYPE", 403, PermanentError),
        ("invalid_grant", 400, PermanentError),
        ("PAYMENT_REQUIRED", 400, PermanentError),
        ("ERROR_METHOD_NOT_FOUND", 404, PermanentError),
    ],
)
def test_error_mapping(code: str, status: int, kind: type[Exception]) -> None:
    error = classify(code, "description", status=status)
    assert type(error) is kind and error.code == code
    if code == "OVERLOAD_LIMIT":
        assert isinstance(error, TemporaryError) and error.retry_after == 600.0
    if code == "NOT_ACTIVE_LINE":
        assert "link the line again" in error.text


def test_error_texts_never_carry_tokens() -> None:
    text = scrub("GET https://x/oauth/token/?client_secret=s3cr3t&refresh_token=r1&auth=a1 failed")
    assert "s3cr3t" not in text and "r1" not in text and "a1" not in text
    assert len(scrub("x" * 1000)) == 300
