"""Outbound shaping: each rule the core applies for a destination's `Capabilities`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from gateway.errors import (
    FetchError,
    GatewayError,
    MediaTooLarge,
    RetryLater,
    TemporaryError,
    WebhookError,
)
from gateway.fetch import GuardedFetcher, redact_url
from gateway.http_errors import refusal_response
from gateway.media import MediaStore
from gateway.models import (
    JSON,
    Attachment,
    DeliveryStatus,
    Message,
    Sender,
    StatusUpdate,
)
from gateway.providers import (
    Capabilities,
    ChannelProvider,
    InstanceContext,
    MediaDownload,
    Outcome,
    Outgoing,
    Route,
    Sent,
    StatusNotice,
)
from gateway.shaping import PARTS_KEY, apply_status, send, split_text
from gateway.testing import FakeNetwork, public_resolver, redact_in_tests

pytestmark = pytest.mark.anyio

ROUTE = Route("main", "wa", "crm")
TOKEN = "123456789:AAEhBP0av28ZZssdfsTsdfsdfsdfsdffs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class MemoryState:
    def __init__(self) -> None:
        self.data: dict[str, JSON] = {}

    async def get(self, key: str) -> JSON | None:
        return self.data.get(key)

    async def put(self, key: str, value: JSON) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]:
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def hold() -> AsyncIterator[None]:
            yield

        return hold()


class Stub(ChannelProvider):
    """Records what it is handed; `fail` maps a call number to the outcome to give."""

    name: ClassVar[str] = "stub"

    def __init__(self, context: InstanceContext, capabilities: Capabilities) -> None:
        super().__init__(context)
        self.capabilities = capabilities
        self.calls: list[list[Outgoing]] = []
        self.fail: dict[int, Outcome] = {}
        self.notices: list[StatusNotice] = []

    @property
    def sent(self) -> list[Message]:
        return [cast(Message, item.event) for call in self.calls for item in call]

    async def send(self, batch: Sequence[Outgoing]) -> Sequence[Outcome]:
        self.calls.append(list(batch))
        number = len(self.calls)
        if number in self.fail:
            return [self.fail.pop(number)] * len(batch)
        return [Sent(f"d{number}-{i}") for i in range(len(batch))]

    async def apply_status(self, notices: Sequence[StatusNotice]) -> Sequence[Outcome]:
        self.notices.extend(notices)
        return [None] * len(notices)

    async def media_download(self, attachment: Attachment) -> MediaDownload:
        return MediaDownload(f"https://api.stub.example/file/bot{TOKEN}/{attachment.url}", {})


async def files(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "gone.jpg":
        return Response("no", 404)
    if name == "busy.jpg":
        return Response("later", 503)
    if request.headers.get("authorization") != "Bearer sesame":
        return Response("who?", 401)
    return Response(b"JPEGDATA", media_type="image/jpeg")


async def telegram_like(request: Request) -> Response:
    if request.url.path.endswith("/gone.jpg"):
        return Response("no", 404)
    return Response(b"PNG", media_type="image/png")


@pytest.fixture
async def context(tmp_path: Path) -> AsyncIterator[InstanceContext]:
    network = FakeNetwork(
        {
            "files.example": Starlette(routes=[StarletteRoute("/{name}", files)]),
            "api.stub.example": Starlette(routes=[StarletteRoute("/{p:path}", telegram_like)]),
        }
    )
    async with network.client() as http:
        media = MediaStore(
            tmp_path / "media",
            "http://gw.test",
            secret=b"s" * 32,
            max_total_bytes=10_000,
            max_file_bytes=1_000,
            ttl_seconds=600,
        )
        fetcher = GuardedFetcher(http, resolver=public_resolver)
        yield InstanceContext(
            "wa", {}, http, MemoryState(), cast(Any, None), media, fetcher, "http://gw.test"
        )


def stub(context: InstanceContext, **capabilities: Any) -> Stub:
    return Stub(context, Capabilities(**capabilities))


def item(job_id: int = 1, quoted: str | None = None, **fields: Any) -> Outgoing:
    fields.setdefault("sender", Sender("op", name="Olga"))
    message = Message(conversation_id="c1", native_id=f"m{job_id}", **fields)
    return Outgoing(job_id, ROUTE, "crm", message, quoted_target_id=quoted)


# texts ----------------------------------------------------------------------------------
def test_split_text_cuts_at_paragraphs_lines_then_words() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c " * 40
    pieces = split_text(text, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert pieces[0] == "a" * 60
    assert "".join("".join(pieces).split()) == "".join(text.split())
    assert split_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]
    assert split_text("short", 100) == ["short"]


async def test_long_text_goes_as_parts_first_quoting_files_last(
    context: InstanceContext,
) -> None:
    provider = stub(context, max_text_length=50)
    photo = Attachment("image", "https://files.example/p.jpg")
    text = " ".join(["word"] * 30)  # 149 characters
    [outcome] = await send(provider, [item(text=text, attachments=(photo,), quoted="q9")], {})
    sent = provider.sent
    assert [len(m.text) <= 50 for m in sent] == [True] * len(sent)
    assert " ".join(m.text for m in sent if m.text) == text
    assert sent[-1].attachments == (photo,) and sent[-1].text == ""
    assert all(not m.attachments for m in sent[:-1])
    assert [c[0].quoted_target_id for c in provider.calls] == ["q9"] + [None] * (len(sent) - 1)
    assert len({m.native_id for m in sent}) == len(sent)  # an idempotent destination keeps all
    assert outcome == Sent("d1-0")  # the first part: replies and quotes refer to the start
    assert context.state.data == {}  # type: ignore[attr-defined]


async def test_a_retry_after_a_failed_part_sends_only_the_rest(context: InstanceContext) -> None:
    provider = stub(context, max_text_length=10)
    provider.fail[2] = TemporaryError("busy")
    outgoing = item(text="aaaaaaaa bbbbbbbb cccccccc")
    [first] = await send(provider, [outgoing], {})
    assert isinstance(first, TemporaryError)
    assert context.state.data[PARTS_KEY.format(job_id=1)] == [["d1-0", {}]]  # type: ignore[attr-defined]
    [second] = await send(provider, [outgoing], {})
    assert [m.text for m in provider.sent] == ["aaaaaaaa", "bbbbbbbb", "bbbbbbbb", "cccccccc"]
    assert second == Sent("d1-0")


async def test_items_that_fit_go_in_one_call(context: InstanceContext) -> None:
    provider = stub(context, max_batch=3)
    outcomes = await send(provider, [item(1, text="a"), item(2, text="b")], {})
    assert len(provider.calls) == 1 and outcomes == [Sent("d1-0"), Sent("d1-1")]
    assert provider.calls[0][0] is not None


# files ----------------------------------------------------------------------------------
async def test_unsupported_kinds_and_large_files_become_links(context: InstanceContext) -> None:
    provider = stub(context, media_kinds=frozenset({"image"}), max_file_size=100)
    photo = Attachment("image", "https://files.example/p.jpg", size=50)
    video = Attachment("video", "https://files.example/v.mp4", filename="v.mp4")
    big = Attachment("image", "https://files.example/big.jpg", size=5_000_000)
    await send(provider, [item(text="look", attachments=(photo, video, big))], {})
    [message] = provider.sent
    assert message.attachments == (photo,)
    assert message.text.splitlines() == [
        "look",
        "📎 v.mp4: https://files.example/v.mp4",
        "📎 image (4.8 MB): https://files.example/big.jpg",
    ]


async def test_rehost_downloads_with_the_sources_headers(context: InstanceContext) -> None:
    class Source(Stub):
        async def media_download(self, attachment: Attachment) -> MediaDownload:
            return MediaDownload(attachment.url, {"Authorization": "Bearer sesame"})

    source = Source(context, Capabilities())
    provider = stub(context)
    private = Attachment("image", "https://files.example/p.jpg", rehost=True)
    await send(provider, [item(attachments=(private,))], {"crm": source})
    [attachment] = provider.sent[0].attachments
    assert attachment.url.startswith("http://gw.test/media/") and not attachment.rehost
    assert attachment.size == 8 and attachment.mime_type == "image/jpeg"


async def test_rehost_failures_note_or_retry_and_never_show_tokens(
    context: InstanceContext,
) -> None:
    source = stub(context)  # its media_download puts a bot token in the URL path
    provider = stub(context)
    gone = Attachment("image", "gone.jpg", rehost=True, filename="gone.jpg")
    [outcome] = await send(provider, [item(text="hi", attachments=(gone,))], {"crm": source})
    assert outcome == Sent("d1-0")  # the file is missing for good: a note says so
    text = provider.sent[0].text
    assert text.startswith("hi\n📎 gone.jpg: could not be fetched (HTTP 404")
    assert TOKEN not in text and "bot***" in text

    class Busy(Stub):
        async def media_download(self, attachment: Attachment) -> MediaDownload:
            return MediaDownload("https://files.example/busy.jpg")

    busy = Attachment("image", "busy.jpg", rehost=True)
    [retry] = await send(
        provider, [item(2, attachments=(busy,))], {"crm": Busy(context, Capabilities())}
    )
    assert isinstance(retry, TemporaryError) and retry.code == "media"


async def test_too_large_is_in_the_one_error_tree() -> None:
    assert issubclass(MediaTooLarge, FetchError) and issubclass(FetchError, GatewayError)
    assert MediaTooLarge("x").permanent and FetchError("x", status=404).permanent
    assert not FetchError("x", status=503).permanent and not FetchError("x").permanent


# quotes, groups, statuses ---------------------------------------------------------------
async def test_quotes_without_quote_support_become_a_line(context: InstanceContext) -> None:
    provider = stub(context, quotes=False)
    await send(provider, [item(text="yes", quoted="q1", quoted_text="Is it\nred?")], {})
    assert provider.sent[0].text == "» Is it red?\nyes"
    assert provider.calls[0][0].quoted_target_id is None
    kept = stub(context)
    await send(kept, [item(text="yes", quoted="q1", quoted_text="Is it red?")], {})
    assert kept.sent[0].text == "yes" and kept.calls[0][0].quoted_target_id == "q1"


async def test_group_messages_name_their_author_where_groups_are_unknown(
    context: InstanceContext,
) -> None:
    provider = stub(context, groups=False)
    await send(provider, [item(text="hi all", is_group=True)], {})
    assert provider.sent[0].text == "Olga:\nhi all"
    grouped = stub(context, groups=True)
    await send(grouped, [item(text="hi all", is_group=True)], {})
    assert grouped.sent[0].text == "hi all"


async def test_read_statuses_only_where_read_receipts_show(context: InstanceContext) -> None:
    def notice(job_id: int, status: DeliveryStatus) -> StatusNotice:
        return StatusNotice(job_id, ROUTE, StatusUpdate(f"m{job_id}", status))

    notices = [notice(1, DeliveryStatus.DELIVERED), notice(2, DeliveryStatus.READ)]
    blind = stub(context)
    assert await apply_status(blind, notices) == [None, None]
    assert [n.job_id for n in blind.notices] == [1]
    seeing = stub(context, read_receipts=True)
    await apply_status(seeing, notices)
    assert [n.job_id for n in seeing.notices] == [1, 2]


# webhooks and redaction -----------------------------------------------------------------
def test_retry_later_answers_503_with_retry_after() -> None:
    refusal = RetryLater("the store is busy", retry_after=2.5)
    assert isinstance(refusal, WebhookError) and refusal.status == 503
    response = refusal_response(refusal, instance="wa")
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    assert b"the store is busy" in response.body


def test_redact_url_masks_tokens_in_paths() -> None:
    assert redact_url(f"https://api.telegram.org/file/bot{TOKEN}/photos/a.jpg?x=1") == (
        "https://api.telegram.org/file/bot***/photos/a.jpg"
    )
    green = "https://api.green-api.com/waInstance1101/sendMessage/d75b3a66374942c5b3c019c698abc2"
    assert redact_url(green) == "https://api.green-api.com/waInstance1101/sendMessage/***"
    assert redact_url("https://cdn.example/media/12345/photo_2024.jpg") == (
        "https://cdn.example/media/12345/photo_2024.jpg"
    )


def test_logs_are_redacted_under_the_test_kit(caplog: pytest.LogCaptureFixture) -> None:
    redact_in_tests(["plugin-secret-value"])
    with caplog.at_level(logging.INFO, logger="gateway_example"):
        logging.getLogger("gateway_example").info(
            "calling https://api.telegram.org/bot%s/getMe with plugin-secret-value", TOKEN
        )
    assert TOKEN not in caplog.text and "plugin-secret-value" not in caplog.text
    assert "bot***/getMe" in caplog.text


async def test_parts_of_different_items_keep_batch_order(context: InstanceContext) -> None:
    provider = stub(context, max_text_length=5, max_batch=5)
    outcomes = await send(
        provider, [item(1, text="one"), item(2, text="aaaa bbbb"), item(3, text="two")], {}
    )
    assert [m.text for m in provider.sent] == ["one", "aaaa", "bbbb", "two"]
    assert [len(c) for c in provider.calls] == [1, 1, 1, 1]
    assert all(isinstance(o, Sent) for o in outcomes)
