"""The Cloud API channel end to end over real HTTP: fake Meta <-> gateway <-> test CRM.

The fake posts signed webhooks to the gateway's real loopback URL; the gateway's outbound
calls reach the fake (graph.facebook.com, lookaside.fbsbx.com) and the CRM recorder.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from gateway_cloudapi.errors import WINDOW_TEXT
from gateway_cloudapi.provider import CloudApiProvider
from gateway_fakes.cloudapi import MAGIC_WINDOW_CLOSED, FakeClock, FakeCloudApi, signature

from gateway.testing import GatewayHarness, Recorder, running_gateway

pytestmark = pytest.mark.anyio

PNID = "106540352242922"
TOKEN = "EAAGfakeAccessToken0000000000"
SECRET = "fake-app-secret"
VERIFY = "verify-me-please"
CUSTOMER = "16505551234"
CRM_AUTH = {"Authorization": "Bearer crm-token"}
ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(tmp_path: Path, **channel: Any) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "admin": {"token": "admin-secret"},
        "retry": {"base_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, "jitter": 0.0},
        # Leases far longer than any jump of the fake clock: a jump past a lease held by a
        # slot mid-send would let a second slot claim the same job, a double send no real
        # clock produces (a send takes far less than `lease_seconds`).
        "workers": {"poll_interval": 0.05, "concurrency": 4, "lease_seconds": 86400.0},
        "channels": {
            "wa": {
                "provider": "cloudapi",
                "phone_number_id": PNID,
                "access_token": TOKEN,
                "app_secret": SECRET,
                "verify_token": VERIFY,
                # The fake's clock is frozen; pacing is covered by the unit tests.
                "pair_interval": 0,
                **channel,
            }
        },
        "crms": {
            "crm": {
                "provider": "test-crm",
                "base_url": "http://crm.test",
                "token": "crm-token",
                "max_batch": 10,
            }
        },
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


@asynccontextmanager
async def cloud_gateway(
    tmp_path: Path, *, core_clock: bool = False, **channel: Any
) -> AsyncIterator[tuple[GatewayHarness, FakeCloudApi, Recorder]]:
    """`core_clock`: the core's retries and settling follow the fake's clock too."""
    fake = FakeCloudApi(clock=FakeClock(time.time()))
    fake.pair_interval = None
    crm = Recorder(name="crm")
    apps = {"graph.facebook.com": fake.app, "lookaside.fbsbx.com": fake.app, "crm.test": crm.app}
    settings = make_settings(tmp_path, **channel)
    clock = fake.clock if core_clock else time.time
    async with httpx.AsyncClient() as http:
        fake.http = http
        async with running_gateway(settings, apps=apps, serve_http=True, clock=clock) as h:
            assert h.url is not None
            # Window and link expiry follow Meta's clock, as they would in production.
            h.gateway.instances["wa"].clock = fake.clock  # type: ignore[attr-defined]
            assert await fake.verify_webhook(h.url + "/webhooks/wa", VERIFY)
            yield h, fake, crm


async def deliver(fake: FakeCloudApi, **options: Any) -> None:
    deliveries = await fake.deliver_webhooks(**options)
    assert deliveries and all(d.status == 200 for d in deliveries), deliveries


async def until(h: GatewayHarness, predicate: Callable[[], bool]) -> None:
    """Wait for `predicate`, woken by each finished delivery job (no sleeping)."""
    while not predicate():
        await h.observer.wait_for("delivered", len(h.observer.of_type("delivered")) + 1)


async def test_conversation_round_trip(tmp_path: Path) -> None:
    async with cloud_gateway(tmp_path) as (h, fake, crm):
        first = fake.customer_writes(CUSTOMER, "Is the shop open?", name="Ann")
        fake.customer_writes(CUSTOMER, "this one", kind="image")
        await deliver(fake)
        await crm.wait_count(2)
        # Quoted later, as people do: the CRM got the quoted message in an earlier batch.
        fake.customer_writes(CUSTOMER, "the red one", context=first)
        await deliver(fake)
        await crm.wait_count(3)
        assert crm.texts() == ["Is the shop open?", "this one", "the red one"]
        assert {r.conversation for r in crm.received} == {CUSTOMER}
        assert crm.received[0].item["sender"] == "Ann"
        assert crm.received[2].item["quote"] == crm.received[0].native_id

        # The image reaches the CRM as a gateway link it can fetch: a redirect to /media/.
        link = crm.received[1].item["attachments"][0]
        assert link["kind"] == "image"
        assert urlsplit(link["url"]).path.startswith("/webhooks/wa/media/")
        found = await h.client.get(urlsplit(link["url"]).path)
        assert found.status_code == 302
        stored = urlsplit(found.headers["location"]).path
        assert stored.startswith("/media/") and stored.endswith("/image.jpg")
        image = await h.client.get(stored)
        media_id = fake.inbound[1].message["image"]["id"]
        assert image.status_code == 200
        assert image.content == fake.media[media_id].content

        # The operator answers, quoting the customer's first message.
        reply = {"id": "op-1", "chat": CUSTOMER, "from": "anna", "text": "Until 8 pm",
                 "quote": crm.received[0].native_id}  # fmt: skip
        answer = await h.client.post("/webhooks/crm", json={"messages": [reply]}, headers=CRM_AUTH)
        assert answer.status_code == 200
        await crm.wait_for(lambda r: len(r.acks) == 1)
        assert len(fake.sent) == 1
        sent = fake.sent[0]
        assert (sent.wa_id, sent.text, sent.context_id) == (CUSTOMER, "Until 8 pm", first)
        assert crm.acks[0]["delivered_id"] == sent.id
        assert crm.acks[0]["error"] is None
        # The operator answered: the customer's newest message is marked read (blue ticks).
        newest = fake.inbound[2].message["id"]
        assert [r.message_id for r in fake.read_receipts] == [newest]

        # Statuses arrive backwards (read first); the CRM sees read and nothing lower after.
        fake.mark_delivered(sent.id)
        fake.mark_read(sent.id)
        await deliver(fake, shuffle_statuses=True)
        await crm.wait_for(lambda r: len(r.statuses) >= 1)
        # The operator reads the customer's message: the customer gets blue ticks.
        crm_read = {"id": crm.received[0].native_id, "status": "read", "chat": CUSTOMER}
        await h.client.post("/webhooks/crm", json={"statuses": [crm_read]}, headers=CRM_AUTH)
        await until(h, lambda: len(fake.read_receipts) == 2)
    assert [s["status"] for s in crm.statuses] == ["read"]
    assert crm.statuses[0]["message_id"] == "op-1"
    assert [r.message_id for r in fake.read_receipts] == [newest, first]


async def test_duplicate_webhooks_have_one_effect(tmp_path: Path) -> None:
    async with cloud_gateway(tmp_path) as (h, fake, crm):
        crm.dedupe = False  # count every delivery, so a second effect would show
        fake.customer_writes(CUSTOMER, "once")
        await deliver(fake, duplicate=2)
        fake.customer_writes(CUSTOMER, "next")
        await deliver(fake)
        await crm.wait_count(2)
    assert crm.texts() == ["once", "next"]
    assert crm.duplicates == 0
    assert len(h.observer.of_type("duplicate")) == 2


async def test_forged_webhooks_are_refused_and_stored_nowhere(tmp_path: Path) -> None:
    async with cloud_gateway(tmp_path) as (h, fake, crm):
        fake.customer_writes(CUSTOMER, "real")
        forged = (
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
            b'"messages","value":{"metadata":{"phone_number_id":"' + PNID.encode() + b'"},'
            b'"messages":[{"from":"1555","id":"wamid.X","timestamp":"1","type":"text",'
            b'"text":{"body":"forged"}}]}}]}]}'
        )
        headers = {"Content-Type": "application/json"}
        missing = await h.client.post("/webhooks/wa", content=forged, headers=headers)
        wrong_key = {**headers, "X-Hub-Signature-256": signature("not-the-secret", forged)}
        wrong = await h.client.post("/webhooks/wa", content=forged, headers=wrong_key)
        tampered_body = forged.replace(b"forged", b"FORGED")
        tampered = await h.client.post(
            "/webhooks/wa",
            content=tampered_body,
            headers={**headers, "X-Hub-Signature-256": signature(SECRET, forged)},
        )
        bad_verify = await h.client.get(
            "/webhooks/wa",
            params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "42"},
        )
        assert not await fake.verify_webhook(h.url + "/webhooks/wa", "guess")  # type: ignore[operator]
        await deliver(fake)
        await crm.wait_count(1)
    assert missing.status_code == 401
    assert (wrong.status_code, tampered.status_code, bad_verify.status_code) == (403, 403, 403)
    assert crm.texts() == ["real"]
    assert len(h.observer.of_type("accepted")) == 1
    assert len(h.observer.of_type("rejected")) == 5


async def test_verification_handshake_echoes_the_challenge(tmp_path: Path) -> None:
    async with cloud_gateway(tmp_path) as (h, _fake, _crm):
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY,
            "hub.challenge": "1158201444",
        }
        answer = await h.client.get("/webhooks/wa", params=params)
    assert answer.status_code == 200
    assert answer.text == "1158201444"
    assert answer.headers["content-type"].startswith("text/plain")


async def test_outside_the_window_is_refused_visibly_and_dead_lettered(tmp_path: Path) -> None:
    async with cloud_gateway(tmp_path) as (h, fake, crm):
        fake.customer_writes(CUSTOMER, "hi")
        await deliver(fake)
        await crm.wait_count(1)
        fake.clock.advance(25 * 3600)  # type: ignore[attr-defined]
        calls_before = len(fake.calls)
        late = {"id": "op-late", "chat": CUSTOMER, "text": "sorry for the wait"}
        # A number that never wrote: the gateway cannot know, Meta refuses it.
        cold = {"id": "op-cold", "chat": MAGIC_WINDOW_CLOSED, "text": "hello?"}
        await h.client.post("/webhooks/crm", json={"messages": [late, cold]}, headers=CRM_AUTH)
        await crm.wait_for(lambda r: len(r.acks) == 2)
        dead = await h.client.get("/admin/dead-letters", headers=ADMIN)
        local_calls = [c for c in fake.calls[calls_before:] if c.path.endswith("/messages")]
    acks = {a["message_id"]: a for a in crm.acks}
    assert acks["op-late"]["error"] == {"code": "131047", "text": WINDOW_TEXT}
    assert acks["op-cold"]["error"]["code"] == "131047"
    assert acks["op-cold"]["error"]["text"].startswith(WINDOW_TEXT)
    # Refused locally without calling Meta; the cold number was tried exactly once.
    assert [c.json["to"] for c in local_calls] == [MAGIC_WINDOW_CLOSED]
    assert fake.sent == []
    letters = dead.json()["dead_letters"]
    assert sorted(d["destination"] for d in letters) == ["wa", "wa"]
    assert all(d["attempts"] == 1 for d in letters)


async def test_webhooks_redelivered_after_an_outage_reach_the_crm_in_the_customers_order(
    tmp_path: Path,
) -> None:
    """Meta could not deliver two messages (the gateway was down) and redelivers them after
    two newer ones of the same chat were accepted; none had reached the CRM yet (its
    delivery was stopped). The CRM gets all four in the order the customer wrote them."""
    async with cloud_gateway(tmp_path) as (h, fake, crm):
        deliverer = h.gateway.deliverer
        assert deliverer is not None
        await deliverer.stop()
        fake.customer_writes(CUSTOMER, "first")
        fake.customer_writes(CUSTOMER, "second")
        unreached, fake.pending = fake.pending, []  # the webhook never got through
        assert isinstance(fake.clock, FakeClock)
        fake.clock.advance(60)
        fake.customer_writes(CUSTOMER, "third")
        fake.customer_writes(CUSTOMER, "fourth")
        await deliver(fake)
        fake.pending = unreached  # Meta's retry, after the newer ones
        await deliver(fake)
        await deliverer.start()
        deliverer.wake()
        await crm.wait_count(4)
        assert crm.texts() == ["first", "second", "third", "fourth"]


async def test_an_operator_reply_whose_answer_was_lost_is_found_by_its_status_not_parked(
    tmp_path: Path,
) -> None:
    """Two replies whose send answers were lost (a crash or a timeout): the one Meta took is
    named by its `sent` status (the tag it echoes) and recorded with its wamid and acked;
    the one that never reached Meta has no status, and once `confirm_window` has passed
    while the number's webhooks kept arriving it is sent again. Nothing parked or doubled."""
    window = 60.0
    async with cloud_gateway(tmp_path, core_clock=True, confirm_window=window) as (h, fake, crm):
        provider = h.gateway.instances["wa"]
        assert isinstance(provider, CloudApiProvider)
        provider.landings.up_since = fake.clock()  # the process started on Meta's clock
        other = "16505550000"
        fake.customer_writes(CUSTOMER, "hi")
        fake.customer_writes(other, "hello")
        await deliver(fake)
        await crm.wait_count(2)
        replies = [
            ({"id": "op-1", "chat": CUSTOMER, "text": "landed, answer lost"}, True),
            ({"id": "op-2", "chat": other, "text": "never left"}, False),
        ]
        for count, (reply, accepted) in enumerate(replies, 1):
            fake.fail_next(timeout=True, after_accept=accepted)
            response = await h.client.post(
                "/webhooks/crm", json={"messages": [reply]}, headers=CRM_AUTH
            )
            assert response.status_code == 200
            await h.observer.wait_for("retried", count)  # outcome unknown: held, not parked
        assert [s.text for s in fake.sent] == ["landed, answer lost"]
        await deliver(fake)  # its `sent` status, naming the job that sent it
        deliverer = h.gateway.deliverer
        assert deliverer is not None
        fake.clock.advance(provider.capabilities.settle_seconds)  # type: ignore[attr-defined]
        deliverer.wake()
        await h.observer.wait_for("reconciled", 1)
        # The status overtook the reply's record: it waits a second for the id map.
        fake.clock.advance(2)  # type: ignore[attr-defined]
        deliverer.wake()
        await crm.wait_for(lambda r: len(r.acks) == 1)
        assert [s.text for s in fake.sent] == ["landed, answer lost"]  # op-2 waits
        fake.clock.advance(window)  # type: ignore[attr-defined]
        fake.customer_writes(CUSTOMER, "thanks")  # the number's webhooks keep arriving
        await deliver(fake)
        await crm.wait_count(3)
        deliverer.wake()
        await crm.wait_for(lambda r: len(r.acks) == 2)
        dead = await h.gateway.store.dead_letters()
    reconciled = {o.message_id: o.detail["landed"] for o in h.observer.of_type("reconciled")}
    assert reconciled == {"op-1": True, "op-2": False}
    assert [s.text for s in fake.sent] == ["landed, answer lost", "never left"]  # one each
    by_message = {a["message_id"]: a["delivered_id"] for a in crm.acks}
    assert by_message == {"op-1": fake.sent[0].id, "op-2": fake.sent[1].id}
    assert dead == []
