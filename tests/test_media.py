"""The media store: writing, serving, expiring, sweeping and re-hosting files."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import FetchError, ForbiddenAddress
from gateway.fetch import GuardedFetcher
from gateway.http_errors import exception_handlers
from gateway.media import MediaStore, MediaTooLarge, StoredMedia

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
PUBLIC = "https://gw.example/"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> MediaStore:
    return MediaStore(
        tmp_path / "media",
        PUBLIC,
        secret=SECRET,
        max_total_bytes=10_000,
        max_file_bytes=4_000,
        ttl_seconds=600,
        clock=clock,
    )


@pytest.fixture
async def client(store: MediaStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[store.route()], exception_handlers=exception_handlers())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as http:
        yield http


def path_of(media: StoredMedia) -> str:
    return urlsplit(media.url).path


async def test_put_returns_public_url_and_serves_file(
    store: MediaStore, client: httpx.AsyncClient
) -> None:
    media = await store.put(b"%PDF data", filename="отчёт 1.pdf", mime_type="application/pdf")
    assert media.url.startswith("https://gw.example/media/")
    assert media.url.endswith("/%D0%BE%D1%82%D1%87%D1%91%D1%82%201.pdf")
    assert media.filename == "отчёт 1.pdf"
    assert media.size == 9
    assert media.expires_at == 1600.0
    assert len(media.token) >= 43

    response = await client.get(path_of(media))
    assert response.status_code == 200
    assert response.content == b"%PDF data"
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-length"] == "9"
    assert response.headers["cache-control"] == "private"
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%201.pdf" in disposition
    assert 'filename="_____ 1.pdf"' in disposition


async def test_head_returns_headers_without_body(
    store: MediaStore, client: httpx.AsyncClient
) -> None:
    media = await store.put(b"hello", filename="a.txt", mime_type=None)
    response = await client.head(path_of(media))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "5"
    assert response.headers["content-type"].startswith("text/plain")


async def test_unknown_and_malformed_tokens_are_404_json(
    store: MediaStore, client: httpx.AsyncClient
) -> None:
    media = await store.put(b"x", filename="a.bin", mime_type=None)
    wrong = "A" * len(media.token)
    for path in (f"/media/{wrong}/a.bin", "/media/short/a.bin", "/media/..%2F..%2Fetc/passwd"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["status"] == 404


async def test_expired_file_is_gone(
    store: MediaStore, client: httpx.AsyncClient, clock: Clock
) -> None:
    media = await store.put(b"x", filename="a.bin", mime_type=None, ttl=10)
    assert (await client.get(path_of(media))).status_code == 200
    clock.now += 10
    response = await client.get(path_of(media))
    assert response.status_code == 410
    assert response.json() == {"error": {"status": 410, "message": "this media file has expired"}}


async def test_name_in_url_is_cosmetic(store: MediaStore, client: httpx.AsyncClient) -> None:
    media = await store.put(b"x", filename="a.bin", mime_type=None)
    response = await client.get(f"/media/{media.token}/whatever.jpg")
    assert response.status_code == 200


async def test_directory_never_holds_the_token(store: MediaStore) -> None:
    media = await store.put(b"content", filename="a.txt", mime_type="text/plain")
    names = sorted(os.listdir(store.directory))
    key = hmac.new(SECRET, media.token.encode(), hashlib.sha256).hexdigest()
    assert names == [key, key + ".json"]
    assert hashlib.sha256(media.token.encode()).hexdigest() not in names
    for name in names:
        assert media.token not in name
        assert media.token.encode() not in (store.directory / name).read_bytes()
    meta = json.loads((store.directory / (key + ".json")).read_text())
    assert meta["filename"] == "a.txt"
    assert meta["mime_type"] == "text/plain"


async def test_tokens_are_unique_per_put(store: MediaStore) -> None:
    first = await store.put(b"same", filename="a.txt", mime_type=None)
    second = await store.put(b"same", filename="a.txt", mime_type=None)
    assert first.token != second.token
    assert first.url != second.url


async def test_file_too_large(store: MediaStore) -> None:
    with pytest.raises(MediaTooLarge, match="larger than 4000 bytes"):
        await store.put(b"x" * 4001, filename=None, mime_type=None)
    assert isinstance(MediaTooLarge("x"), FetchError)


@pytest.mark.parametrize(
    ("filename", "mime", "name", "served_type"),
    [
        (None, "image/png", "file.png", "image/png"),
        (None, None, "file", "application/octet-stream"),
        ("../../etc/passwd", None, "passwd", "application/octet-stream"),
        ("photo.jpg", "application/octet-stream", "photo.jpg", "image/jpeg"),
        ("voice.ogg", "audio/ogg; codecs=opus", "voice.ogg", "audio/ogg; codecs=opus"),
        ("x.bin", "text/html\r\nSet-Cookie: a=b", "x.bin", "application/octet-stream"),
    ],
)
async def test_names_and_types_are_cleaned(
    store: MediaStore,
    client: httpx.AsyncClient,
    filename: str | None,
    mime: str | None,
    name: str,
    served_type: str,
) -> None:
    media = await store.put(b"data", filename=filename, mime_type=mime)
    assert media.filename == name
    assert unquote(media.url.rsplit("/", 1)[-1]) == name
    response = await client.get(path_of(media))
    assert response.headers["content-type"] == served_type
    assert "set-cookie" not in response.headers


async def test_html_is_sandboxed(store: MediaStore, client: httpx.AsyncClient) -> None:
    media = await store.put(b"<script>1</script>", filename="x.html", mime_type="text/html")
    response = await client.get(path_of(media))
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["content-disposition"].startswith("attachment")


async def test_sweep_deletes_expired_files(store: MediaStore, clock: Clock) -> None:
    short = await store.put(b"a", filename="a", mime_type=None, ttl=5)
    long = await store.put(b"b", filename="b", mime_type=None, ttl=50)
    clock.now += 10
    assert await store.sweep() == 1
    names = os.listdir(store.directory)
    assert len(names) == 2
    key = hmac.new(SECRET, long.token.encode(), hashlib.sha256).hexdigest()
    assert set(names) == {key, key + ".json"}
    assert short.token


async def test_sweep_deletes_oldest_when_over_budget(
    store: MediaStore, clock: Clock, client: httpx.AsyncClient
) -> None:
    files = []
    for _ in range(3):
        files.append(await store.put(b"x" * 3000, filename="f", mime_type=None))
        clock.now += 1
    assert await store.sweep() == 0
    # The fourth file takes the total over 10 000 bytes; the oldest goes at once.
    files.append(await store.put(b"x" * 3000, filename="f", mime_type=None))
    statuses = [(await client.get(path_of(f))).status_code for f in files]
    assert statuses == [404, 200, 200, 200]


async def test_sweep_removes_orphans_and_stale_temp_files(store: MediaStore) -> None:
    await store.put(b"keep", filename="k", mime_type=None)
    orphan = store.directory / ("0" * 64)
    orphan.write_bytes(b"no meta")
    fresh_orphan = store.directory / ("1" * 64)
    fresh_orphan.write_bytes(b"maybe mid-put")
    temp = store.directory / ".tmp-abc"
    temp.write_bytes(b"partial")
    broken_meta = store.directory / ("2" * 64 + ".json")
    broken_meta.write_text("{not json")
    old = time.time() - 7200
    for path in (orphan, temp):
        os.utime(path, (old, old))
    removed = await store.sweep()
    assert removed == 2  # the old orphan and the broken meta
    assert not orphan.exists()
    assert not temp.exists()
    assert not broken_meta.exists()
    assert fresh_orphan.exists()


async def test_sweep_of_missing_directory(tmp_path: Path) -> None:
    store = MediaStore(
        tmp_path / "nowhere",
        PUBLIC,
        secret=SECRET,
        max_total_bytes=1,
        max_file_bytes=1,
        ttl_seconds=1,
    )
    assert await store.sweep() == 0


# re-hosting -------------------------------------------------------------------------------
async def remote_file(request: Request) -> Response:
    return Response(
        b"\x89PNG remote",
        media_type="image/png",
        headers={"Content-Disposition": 'inline; filename="remote.png"'},
    )


async def remote_big(request: Request) -> Response:
    return Response(b"z" * 5000, media_type="application/octet-stream")


@pytest.fixture
async def fetcher() -> AsyncIterator[GuardedFetcher]:
    remote = Starlette(routes=[Route("/img", remote_file), Route("/big", remote_big)])

    async def resolve(host: str) -> list[str]:
        return {"files.example": ["93.184.216.34"], "intranet.example": ["192.168.1.10"]}[host]

    async with httpx.AsyncClient(
        mounts={"https://files.example": httpx.ASGITransport(app=remote)}
    ) as http:
        yield GuardedFetcher(http, resolver=resolve)


async def test_rehost_fetches_and_serves(
    store: MediaStore, client: httpx.AsyncClient, fetcher: GuardedFetcher
) -> None:
    media = await store.rehost("https://files.example/img?sig=1", fetcher)
    assert media.filename == "remote.png"
    assert media.mime_type == "image/png"
    response = await client.get(path_of(media))
    assert response.content == b"\x89PNG remote"
    assert response.headers["content-type"] == "image/png"


async def test_rehost_overrides_name_and_type(store: MediaStore, fetcher: GuardedFetcher) -> None:
    media = await store.rehost(
        "https://files.example/img", fetcher, filename="mine.webp", mime_type="image/webp"
    )
    assert (media.filename, media.mime_type) == ("mine.webp", "image/webp")


async def test_rehost_refuses_large_files(store: MediaStore, fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match="larger than 4000 bytes"):
        await store.rehost("https://files.example/big", fetcher)
    assert not store.directory.exists() or os.listdir(store.directory) == []


async def test_rehost_refuses_private_addresses(store: MediaStore, fetcher: GuardedFetcher) -> None:
    with pytest.raises(ForbiddenAddress):
        await store.rehost("http://intranet.example/secret.png", fetcher)
    with pytest.raises(ForbiddenAddress):
        await store.rehost("http://169.254.169.254/latest/meta-data/", fetcher)
