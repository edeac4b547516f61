"""Scenario 4, bad input: property-based fuzzing of every HTTP endpoint, in process.

Random and malformed JSON, PHP-style form bodies with hostile bracket keys (deep nesting,
huge indexes), wrong types, invalid UTF-8, oversized bodies, against every provider's
webhook paths, the admin API and the probes. Never a 5xx, a JSON error for every 4xx,
nothing stored from a rejected request, memory bounded.
"""

from __future__ import annotations

import gc
import json
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread
import pytest
from gateway_fakes.bitrix24 import FakePortal
from gateway_fakes.chatapi import FakeChatApi
from gateway_fakes.cloudapi import FakeCloudApi
from gateway_fakes.greenapi import FakeGreenApi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.testing import GatewayHarness, running_gateway
from gateway.testing.tally import Tally

pytestmark = pytest.mark.anyio

PATHS = [
    "/webhooks/cloud",
    "/webhooks/chat",
    "/webhooks/chat/fuzz-webhook-secret-0123456789",
    "/webhooks/green",
    "/webhooks/test",
    "/webhooks/b24/events",
    "/webhooks/b24/install",
    "/webhooks/b24/placement",
    "/webhooks/b24",
    "/webhooks/nope",
    "/admin/replay",
    "/admin/dead-letters/1/replay",
    "/admin/dead-letters",
    "/admin/jobs/1",
    "/admin/queue",
    "/metrics",
    "/readyz",
]
PAGES = {"/webhooks/b24/install", "/webhooks/b24/placement"}
QUERIES = ["", "?limit=abc", "?hub.mode=subscribe&hub.challenge=x", "?a" + "[" * 50 + "=1"]
HEADERS = [
    {},
    {"Content-Type": "application/json"},
    {"Content-Type": "application/x-www-form-urlencoded"},
    {"Content-Type": "multipart/form-data; boundary=xyz"},
    {"Content-Type": "application/json", "Authorization": "Bearer test-token"},
    {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00"},
    {"Content-Type": "application/json", "Authorization": "Bearer fuzz-admin-token"},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
# Shapes the providers look for, with wrong types inside.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "messages": json_values,
        "statuses": json_values,
        "object": st.sampled_from(["whatsapp_business_account", 1, None]),
        "entry": json_values,
        "typeWebhook": st.sampled_from(["incomingMessageReceived", "outgoingMessageStatus", 7]),
        "instanceData": json_values,
        "event": st.sampled_from(["ONIMCONNECTORMESSAGEADD", "ONAPPINSTALL", ""]),
        "auth": json_values,
        "data": json_values,
        "ack": json_values,
    },
)
bracket_key = st.builds(
    lambda base, parts: base + "".join(f"[{p}]" for p in parts),
    st.sampled_from(["data", "auth", "event", "MESSAGES", "a"]),
    st.lists(
        st.one_of(
            st.integers(0, 10**12).map(str),
            st.sampled_from(["", "]", "[", "MESSAGES", "application_token", "member_id"]),
            st.text(max_size=5),
        ),
        max_size=60,
    ),
)
form_body = st.lists(st.tuples(bracket_key, st.text(max_size=20)), max_size=20).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
)
bodies = st.one_of(
    st.binary(max_size=300),  # invalid UTF-8 and random bytes
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    form_body,
    st.sampled_from([b"{", b"[" * 5000, b'{"a":' * 3000, b"\xff\xfe", b"null", b"1e999999"]),
)


def fuzz_settings(tmp: Path, portal: FakePortal) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp / 'gw.db'}"},
        "media": {"directory": str(tmp / "media")},
        "admin": {"token": "fuzz-admin-token"},
        "max_body_bytes": 64 * 1024,
        "workers": {"poll_interval": 0.5, "concurrency": 1},
        "channels": {
            "cloud": {
                "provider": "cloudapi",
                "phone_number_id": "106540352242922",
                "access_token": "EAAGfakeAccessToken0000000000",
                "app_secret": "fake-app-secret",
                "verify_token": "fuzz-verify-token",
            },
            "chat": {
                "provider": "chatapi",
                "base_url": "https://api.chat-api.test/instance1101",
                "token": "tok",
                "webhook_secret": "fuzz-webhook-secret-0123456789",
            },
            "green": {
                "provider": "greenapi",
                "api_url": "https://api.green-api.test",
                "id_instance": "1101000001",
                "api_token": "fake0green0api0token",
                "webhook_token": "green-hook-token-0123456789",
            },
            "test": {
                "provider": "test-channel",
                "base_url": "http://channel.test",
                "token": "test-token",
            },
        },
        "crms": {
            "b24": {
                "provider": "bitrix24",
                "client_id": portal.client_id,
                "client_secret": portal.client_secret,
            }
        },
    }


@asynccontextmanager
async def fuzz_gateway(tmp: Path) -> AsyncIterator[GatewayHarness]:
    portal = FakePortal(installed=False)
    apps = {
        "graph.facebook.com": FakeCloudApi().app,
        "api.chat-api.test": FakeChatApi().app,
        "api.green-api.test": FakeGreenApi().app,
        "acme.bitrix24.com": portal.app,
        "oauth.bitrix.info": portal.oauth_app,
    }
    async with running_gateway(fuzz_settings(tmp, portal), apps=apps) as h:
        yield h


async def stored(h: GatewayHarness) -> Any:
    stats = await h.gateway.store.stats(h.gateway.clock())
    return sorted((s.destination, s.ready, s.dead) for s in stats)


def rss_kb() -> int:
    """Memory this process holds now, after a collection: what a leak would make grow.

    Not the peak (`ru_maxrss`): a transient buffer that is freed is not a leak, and the
    peak also counts every test that ran before this one in the same process.
    """
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


Request = tuple[str, str, dict[str, str], bytes, str]


def requests(examples: int, run: Callable[..., Awaitable[None]]) -> Callable[[], None]:
    """`examples` requests drawn by hypothesis, each handed to `run` on the caller's loop."""

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(
        path=st.sampled_from(PATHS),
        method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
        headers=st.sampled_from(HEADERS),
        body=bodies,
        query=st.sampled_from(QUERIES),
    )
    def example(path: str, method: str, headers: dict[str, str], body: bytes, query: str) -> None:
        anyio.from_thread.run(run, path, method, headers, body, query)

    return example  # type: ignore[no-any-return]


async def draw(examples: int) -> list[Request]:
    """`examples` requests drawn by hypothesis and kept, none sent."""
    drawn: list[Request] = []

    async def keep(*request: Any) -> None:
        drawn.append(request)

    await anyio.to_thread.run_sync(requests(examples, keep))
    return drawn


async def fuzz(tmp: Path, examples: int) -> dict[str, int]:
    counts = {"requests": 0, "rejected": 0, "accepted": 0}
    async with fuzz_gateway(tmp) as h:

        async def check(
            path: str, method: str, headers: dict[str, str], body: bytes, query: str
        ) -> None:
            state = await stored(h)
            response = await h.client.request(method, path + query, content=body, headers=headers)
            counts["requests"] += 1
            assert response.status_code < 500, (path, body[:200], response.text[:500])
            if response.status_code < 400:
                counts["accepted"] += 1
                return
            counts["rejected"] += 1
            if path in PAGES:
                # Pages a person sees in the Bitrix24 iframe explain the error in HTML.
                kind = response.headers["content-type"]
                assert kind.startswith(("text/html", "application/json")), kind
                assert await stored(h) == state, (path, body[:200])
                return
            assert response.headers["content-type"].startswith("application/json"), (
                path,
                response.status_code,
                response.text[:300],
            )
            assert "error" in response.json()
            assert await stored(h) == state, (path, body[:200])

        # Memory: a fresh set of requests, drawn before the gateway's memory is read, so
        # that hypothesis's own record of its examples (tens of megabytes over thousands)
        # is not counted as the gateway's.
        fresh = await draw(examples)
        before = rss_kb()
        for request in fresh:
            await check(*request)
        counts["rss_growth_kb"] = rss_kb() - before
        # Hypothesis drives a synchronous function: it runs in a worker thread and hands
        # each example back to this event loop, where the gateway lives; a failure shrinks.
        await anyio.to_thread.run_sync(requests(examples, check))
        # Oversized bodies: refused before they are read whole.
        for path in ("/webhooks/test", "/webhooks/cloud", "/webhooks/b24/events", "/admin/replay"):
            state = await stored(h)
            big = b'{"messages": "' + b"x" * (2 * 1024 * 1024) + b'"}'
            headers = HEADERS[6] if path.startswith("/admin") else HEADERS[4]
            response = await h.client.post(path, content=big, headers=headers)
            assert response.status_code == 413, (path, response.status_code)
            assert "error" in response.json()
            assert await stored(h) == state
    return counts


async def test_fuzz_short(tmp_path: Path) -> None:
    counts = await fuzz(tmp_path, examples=150)
    print(counts)
    assert counts["requests"] >= 150
    assert counts["rss_growth_kb"] < 10 * 1024


@pytest.mark.chaos
@pytest.mark.parametrize("examples", [5000])
async def test_fuzz_chaos(tmp_path: Path, examples: int) -> None:
    counts = await fuzz(tmp_path, examples=examples)
    tally = Tally("fuzz")
    tally.inject(
        f"{examples} hypothesis examples over {len(PATHS)} endpoints, twice (drawn first for"
        " the memory figure, then explored) + oversized bodies"
    )
    tally.extra.update(counts)
    print(tally.write(), tally.summary())
    assert counts["rss_growth_kb"] < 10 * 1024
