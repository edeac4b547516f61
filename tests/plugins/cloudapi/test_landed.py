"""`CloudApiProvider.find_sent`: a send whose answer was lost is found by the tag
(`biz_opaque_callback_data`) the fake Meta echoes in its status webhooks, or sent again
once no status came for `confirm_window` while webhooks kept arriving."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gateway_cloudapi.landed import EVIDENCE
from gateway_cloudapi.provider import CloudApiProvider
from gateway_fakes.cloudapi import FakeClock, FakeCloudApi

from gateway.errors import AmbiguousError, TemporaryError
from gateway.models import Attachment
from gateway.providers import NotLanded, Outgoing, Sent
from gateway.testing import GatewayHarness
from tests.plugins.cloudapi.test_provider import (
    CUSTOMER,
    harness,
    open_window,
    outgoing,
    send_one,
)

pytestmark = pytest.mark.anyio
WINDOW = 600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def since(item: Outgoing, began: float) -> Outgoing:
    """The item as the core asks about it: with the time its lost attempt began."""
    return dataclasses.replace(item, sending_since=began)


def advance(fake: FakeCloudApi, seconds: float) -> None:
    fake.clock.advance(seconds)  # type: ignore[attr-defined]


@asynccontextmanager
async def unpaced(
    tmp_path: Path, **channel: Any
) -> AsyncIterator[tuple[GatewayHarness, FakeCloudApi, CloudApiProvider]]:
    """The provider against the fake, with no pair-rate pacing on either side."""
    fake = FakeCloudApi(clock=FakeClock(time.time()))
    fake.pair_interval = None
    async with harness(tmp_path, fake, pair_interval=0, **channel) as (h, fake, provider):
        provider.landings.up_since = fake.clock()
        yield h, fake, provider


async def deliver(fake: FakeCloudApi) -> None:
    made = await fake.deliver_webhooks()
    assert made and all(d.ok for d in made), made


async def ask(provider: CloudApiProvider, item: Outgoing) -> Any:
    (answer,) = await provider.find_sent([item])
    return answer


async def evidence(provider: CloudApiProvider) -> list[tuple[str, Any]]:
    return await provider.context.state.items(EVIDENCE)


def recorded_by_core(monkeypatch: pytest.MonkeyPatch, provider: CloudApiProvider) -> set[str]:
    """The wamids whose id map rows the core wrote (it does at the end of a batch; these
    tests call the provider directly): add to the set returned."""
    hub = provider.landings.hub
    lookup = hub.was_sent_by_gateway
    recorded: set[str] = set()

    async def was_sent(instance: str, wamid: str) -> bool:
        return wamid in recorded or await lookup(instance, wamid)

    monkeypatch.setattr(hub, "was_sent_by_gateway", was_sent)
    return recorded


async def test_a_status_naming_a_send_whose_answer_was_lost_says_it_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with unpaced(tmp_path) as (_h, fake, provider):
        recorded = recorded_by_core(monkeypatch, provider)
        assert provider.capabilities.finds_sent
        assert 0 < provider.capabilities.settle_seconds <= provider.settings.confirm_window
        await open_window(provider, fake)
        answered = await send_one(provider, outgoing(job_id=7, text="answered"))
        assert isinstance(answered, Sent)
        recorded.add(answered.native_id)
        began = fake.clock()
        fake.fail_next(timeout=True)  # Meta takes it; its answer never comes back
        lost = outgoing(job_id=8, text="answer lost")
        assert isinstance(await send_one(provider, lost), AmbiguousError)
        # Every send names its job and part, nothing else.
        tags = [s.request["biz_opaque_callback_data"] for s in fake.sent]
        assert tags == ["wcg:7:0", "wcg:8:0"]
        await deliver(fake)  # the `sent` statuses of both, echoing the tags
        # Only the unknown one is written down; the recorded one cost a lookup.
        assert [key for key, _ in await evidence(provider)] == [f"{EVIDENCE}8:0"]
        fake.mark_delivered(fake.sent[1].id)
        await deliver(fake)  # later statuses of it write nothing more
        assert len(await evidence(provider)) == 1
        advance(fake, provider.capabilities.settle_seconds)
        found = await ask(provider, since(lost, began))
    assert isinstance(found, Sent)
    assert found.native_id == fake.sent[1].id
    assert found.extra == {"wa_id": CUSTOMER}


async def test_a_status_that_outruns_the_record_of_its_send_is_evidence(
    tmp_path: Path,
) -> None:
    """The answer came, the `sent` status came before the core recorded the batch, and the
    process died before the record: the status was answered 2xx and will not come again,
    so it was written down, and the send is found landed rather than sent twice."""
    async with unpaced(tmp_path) as (_h, fake, provider):
        await open_window(provider, fake)
        began = fake.clock()
        item = since(outgoing(job_id=9, text="answered, never recorded"), began)
        answered = await send_one(provider, item)
        assert isinstance(answered, Sent)
        await deliver(fake)  # its status, before the batch's end (nothing recorded it)
        assert [key for key, _ in await evidence(provider)] == [f"{EVIDENCE}9:0"]
        fake.mark_delivered(answered.native_id)
        await deliver(fake)  # already written down: nothing more
        assert len(await evidence(provider)) == 1
        provider.landings = type(provider.landings)(
            provider.context.state,
            provider.context.hub,
            provider.instance,
            window=WINDOW,
            clock=fake.clock,
        )  # the process restarted: nothing is remembered
        advance(fake, provider.capabilities.settle_seconds)
        found = await ask(provider, item)
    assert isinstance(found, Sent)
    assert found.native_id == answered.native_id


async def test_no_status_is_sent_again_only_while_webhooks_demonstrably_arrive(
    tmp_path: Path,
) -> None:
    async with unpaced(tmp_path, confirm_window=WINDOW) as (_h, fake, provider):
        await open_window(provider, fake)
        began = fake.clock()
        fake.fail_next(timeout=True, after_accept=False)  # it never reached Meta
        item = since(outgoing(job_id=3, text="never left"), began)
        assert isinstance(await send_one(provider, item), AmbiguousError)
        assert fake.sent == []
        advance(fake, provider.capabilities.settle_seconds)
        early = await ask(provider, item)
        # Too early to tell: asked again later, at growing intervals up to the window.
        assert isinstance(early, TemporaryError) and early.code == "awaiting_status"
        assert early.retry_after is not None and 0 < early.retry_after < WINDOW
        # A webhook right after the send, then silence: the window passes, and a missing
        # status proves nothing while none arrives (the endpoint may be down).
        fake.customer_writes(CUSTOMER, "hello?")
        await deliver(fake)
        advance(fake, WINDOW)
        quiet = await ask(provider, item)
        assert isinstance(quiet, TemporaryError) and quiet.code == "no_webhooks"
        # Webhooks arrive again, well after the send: its status would have come too.
        fake.customer_writes(CUSTOMER, "still there?")
        await deliver(fake)
        again = await ask(provider, item)
    assert isinstance(again, NotLanded)


async def test_webhooks_another_process_took_count_too(tmp_path: Path) -> None:
    """The delivery process of `[workers] delivery_process` takes no webhooks: the HTTP
    process notes when it last heard one in the instance's state."""
    async with unpaced(tmp_path, confirm_window=WINDOW) as (_h, fake, provider):
        await open_window(provider, fake)
        began = fake.clock()
        fake.fail_next(timeout=True, after_accept=False)  # it never reached Meta
        item = since(outgoing(job_id=3, text="never left"), began)
        assert isinstance(await send_one(provider, item), AmbiguousError)
        advance(fake, WINDOW)
        fake.customer_writes(CUSTOMER, "still there?")
        await deliver(fake)
        provider.landings.heard_at = None  # as in a process that took none of them
        assert isinstance(await ask(provider, item), NotLanded)


async def test_after_a_restart_the_window_counts_from_when_webhooks_could_arrive(
    tmp_path: Path,
) -> None:
    """A status Meta posted while the gateway was down comes back on Meta's retry
    schedule: the window starts when this process began receiving, not at the send."""
    async with unpaced(tmp_path, confirm_window=WINDOW) as (_h, fake, provider):
        began = fake.clock()
        item = since(outgoing(job_id=4, text="sent before the crash"), began)
        advance(fake, 300)
        provider.landings.up_since = fake.clock()  # the process restarted 5 minutes later
        advance(fake, WINDOW - 200)  # 10 minutes after the send, 6.7 after the restart
        fake.customer_writes(CUSTOMER, "anyone?")
        await deliver(fake)
        waiting = await ask(provider, item)
        assert isinstance(waiting, TemporaryError) and waiting.code == "awaiting_status"
        advance(fake, 200)
        fake.customer_writes(CUSTOMER, "anyone at all?")
        await deliver(fake)
        assert isinstance(await ask(provider, item), NotLanded)


async def test_on_a_quiet_number_a_later_sends_status_is_the_proof(tmp_path: Path) -> None:
    """No webhook late in the window (the last replies before a crash, nothing after): a
    status of a send made after the lost one began proves the endpoint works; one of an
    earlier send proves nothing for it."""
    async with unpaced(tmp_path, confirm_window=WINDOW) as (_h, fake, provider):
        await open_window(provider, fake)
        assert isinstance(await send_one(provider, outgoing(job_id=1, text="earlier")), Sent)
        await deliver(fake)  # its `sent` status
        advance(fake, 1)
        fake.fail_next(timeout=True, after_accept=False)  # never reached Meta
        first = since(outgoing(job_id=2, text="lost before the later send"), fake.clock())
        assert isinstance(await send_one(provider, first), AmbiguousError)
        advance(fake, 1)
        assert isinstance(await send_one(provider, outgoing(job_id=3, text="later")), Sent)
        await deliver(fake)  # the later send's status: the last webhook of all
        advance(fake, 1)
        fake.fail_next(timeout=True, after_accept=False)
        second = since(outgoing(job_id=4, text="lost after it"), fake.clock())
        assert isinstance(await send_one(provider, second), AmbiguousError)
        assert [s.request["biz_opaque_callback_data"] for s in fake.sent] == ["wcg:1:0", "wcg:3:0"]
        advance(fake, WINDOW)
        resend = await ask(provider, first)
        unproven = await ask(provider, second)
    assert isinstance(resend, NotLanded), resend
    assert "a later send's status came" in str(resend)
    # Only statuses of sends made before it: no proof, asked again, parked in the end.
    assert isinstance(unproven, TemporaryError) and unproven.code == "no_webhooks"


async def test_a_later_sends_status_does_not_cut_the_window_short(tmp_path: Path) -> None:
    """Meta took the send, but the post of its status failed (the gateway was down); a
    later send's status gets through first. Within the window that is no verdict: Meta's
    re-post of the lost status comes, and names the send as landed."""
    async with unpaced(tmp_path, confirm_window=WINDOW) as (_h, fake, provider):
        await open_window(provider, fake)
        began = fake.clock()
        fake.fail_next(timeout=True)  # Meta takes it; its answer never comes back
        item = since(outgoing(job_id=5, text="taken, status lost"), began)
        assert isinstance(await send_one(provider, item), AmbiguousError)
        endpoint = fake.callback_url
        fake.callback_url = "http://gateway.test/webhooks/down"
        refused = await fake.deliver_webhooks()
        assert refused and not any(d.ok for d in refused) and fake.retries
        fake.callback_url = endpoint
        advance(fake, 1)
        assert isinstance(await send_one(provider, outgoing(job_id=6, text="later")), Sent)
        await deliver(fake)
        advance(fake, WINDOW - 2)
        waiting = await ask(provider, item)
        assert isinstance(waiting, TemporaryError) and waiting.code == "awaiting_status"
        reposted = await fake.retry_webhooks(force=True)
        assert reposted and all(d.ok for d in reposted)
        advance(fake, 2)
        found = await ask(provider, item)
    assert isinstance(found, Sent)
    assert found.native_id == fake.sent[0].id


async def test_a_part_found_joins_the_progress_and_the_rest_is_sent(tmp_path: Path) -> None:
    async with unpaced(tmp_path) as (_h, fake, provider):
        await open_window(provider, fake)
        files = (
            Attachment("image", "https://files.example/photo.jpg", mime_type="image/jpeg"),
            Attachment("document", "https://files.example/invoice.pdf"),
            Attachment("image", "https://files.example/photo.jpg", mime_type="image/jpeg"),
        )
        began = fake.clock()
        item = since(outgoing(job_id=5, text="three files", attachments=files), began)
        fake.fail_next(timeout=True)
        assert isinstance(await send_one(provider, item), AmbiguousError)
        assert [s.request["biz_opaque_callback_data"] for s in fake.sent] == ["wcg:5:0"]
        await deliver(fake)
        partly = await ask(provider, item)
        assert isinstance(partly, NotLanded)  # part 0 went out: the resend goes on from 1
        resent = await send_one(provider, item)
    assert isinstance(resent, Sent)
    assert [s.request["biz_opaque_callback_data"] for s in fake.sent] == [
        "wcg:5:0",
        "wcg:5:1",
        "wcg:5:2",
    ]
    assert resent.native_id == fake.sent[0].id
    assert resent.extra["parts"] == [s.id for s in fake.sent]
