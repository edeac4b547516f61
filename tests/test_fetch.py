"""The guarded fetcher: address checks, redirects, size caps, timeouts, error messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import FetchError, ForbiddenAddress
from gateway.fetch import (
    FetchedFile,
    GuardedFetcher,
    clean_filename,
    disposition_filename,
    redact_url,
)

pytestmark = pytest.mark.anyio

DNS = {
    "files.example": ["93.184.216.34"],
    "cdn.example": ["2606:4700::1111"],
    "internal.example": ["10.0.0.5"],
    "meta.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "v6local.example": ["::1"],
    "mapped.example": ["::ffff:192.168.1.1"],
    "a.corp.example": ["10.1.1.1"],
    "corp.example": ["10.1.1.2"],
    "evilcorp.example": ["10.1.1.3"],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Resolver:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host not in DNS:
            raise OSError(-2, "Name or service not known")
        return DNS[host]


async def file_endpoint(request: Request) -> Response:
    return Response(
        b"%PDF-1.7 hello",
        media_type="application/pdf",
        headers={
            "Content-Disposition": 'attachment; filename="fallback.pdf"; '
            "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf"
        },
    )


async def plain_name(request: Request) -> Response:
    return PlainTextResponse("just text")


async def big_declared(request: Request) -> Response:
    return Response(b"x" * 2048, media_type="application/octet-stream")


async def big_streamed(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    # A streamed body has no Content-Length: only the running count can stop it.
    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def redirect(request: Request) -> Response:
    return RedirectResponse(request.query_params["to"], status_code=302)


async def chain(request: Request) -> Response:
    n = int(request.path_params["n"])
    if n == 0:
        return PlainTextResponse("end of chain")
    return RedirectResponse(f"/chain/{n - 1}", status_code=307)


async def echo_auth(request: Request) -> Response:
    return PlainTextResponse(request.headers.get("authorization", "<none>"))


async def missing(request: Request) -> Response:
    return PlainTextResponse("nope", status_code=404)


async def hang(request: Request) -> Response:
    await anyio.Event().wait()
    raise AssertionError("unreachable")


files_app = Starlette(
    routes=[
        Route("/doc", file_endpoint),
        Route("/dir/notes.txt", plain_name),
        Route("/big", big_declared),
        Route("/streamed", big_streamed),
        Route("/redirect", redirect),
        Route("/chain/{n}", chain),
        Route("/auth", echo_auth),
        Route("/missing", missing),
        Route("/hang", hang),
    ]
)


def refuse_network(request: httpx.Request) -> httpx.Response:
    # Anything not mounted below would be a real connection; fail it like a dead host would.
    raise httpx.ConnectError(f"connection refused to {request.url}", request=request)


def make_client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=files_app)
    return httpx.AsyncClient(
        transport=httpx.MockTransport(refuse_network),
        mounts={
            "https://files.example": transport,
            "https://cdn.example": transport,
            "http://internal.example": transport,
        },
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as http:
        yield http


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def fetcher(client: httpx.AsyncClient, resolver: Resolver) -> GuardedFetcher:
    return GuardedFetcher(client, resolver=resolver, max_bytes=1024, timeout=5.0)


# address checks ---------------------------------------------------------------------------
FORBIDDEN = [
    "http://127.0.0.1/",
    "http://127.255.1.2:8080/x",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://1.2.3.4.5/",
    "http://999.1.1.1/",
    "http://internal.example/",
    "http://meta.example/",
    "http://mixed.example/",
    "http://v6local.example/",
    "http://mapped.example/",
    "ftp://files.example/x",
    "file:///etc/passwd",
    "gopher://files.example/",
    "https://user:password@files.example/doc",
    "https://user@files.example/doc",
    "http:///nohost",
    "http://bad_host!/",
    "not a url",
]


@pytest.mark.parametrize("url", FORBIDDEN)
async def test_forbidden_urls_are_refused(fetcher: GuardedFetcher, url: str) -> None:
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url(url)
    with pytest.raises(ForbiddenAddress):
        await fetcher.fetch(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/doc",
        "https://FILES.EXAMPLE./doc",
        "https://cdn.example/x",
        "http://93.184.216.34/",
        "http://[2606:4700::1111]/",
        "http://1.1.1.1/",
        "http://172.32.0.1/",
        "http://100.128.0.1/",
    ],
)
async def test_public_urls_pass(fetcher: GuardedFetcher, url: str) -> None:
    await fetcher.check_url(url)


async def test_metadata_address_message_names_the_address(fetcher: GuardedFetcher) -> None:
    with pytest.raises(ForbiddenAddress, match=r"169\.254\.169\.254"):
        await fetcher.check_url("http://meta.example/latest")


async def test_ip_literals_skip_dns(fetcher: GuardedFetcher, resolver: Resolver) -> None:
    await fetcher.check_url("http://93.184.216.34/")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("http://2130706433/")
    assert resolver.asked == []


async def test_unresolvable_host_is_a_fetch_error(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match="cannot resolve") as info:
        await fetcher.check_url("https://nowhere.example/")
    assert not isinstance(info.value, ForbiddenAddress)


async def test_allow_private_permits_private_space_but_not_bad_schemes(
    client: httpx.AsyncClient, resolver: Resolver
) -> None:
    fetcher = GuardedFetcher(client, resolver=resolver, allow_private=True)
    await fetcher.check_url("http://10.0.0.1/")
    await fetcher.check_url("http://internal.example/")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("file:///etc/passwd")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("http://user:pw@10.0.0.1/")


async def test_allowed_hosts_exact_and_wildcard(
    client: httpx.AsyncClient, resolver: Resolver
) -> None:
    fetcher = GuardedFetcher(
        client, resolver=resolver, allowed_hosts=["Internal.Example", "*.corp.example"]
    )
    await fetcher.check_url("http://internal.example/")
    await fetcher.check_url("http://a.corp.example/")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("http://corp.example/")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("http://evilcorp.example/")
    with pytest.raises(ForbiddenAddress):
        await fetcher.check_url("http://meta.example/")


async def test_allowed_host_can_be_fetched(client: httpx.AsyncClient, resolver: Resolver) -> None:
    fetcher = GuardedFetcher(client, resolver=resolver, allowed_hosts=["internal.example"])
    fetched = await fetcher.fetch("http://internal.example/dir/notes.txt")
    assert fetched.content == b"just text"


# fetching ---------------------------------------------------------------------------------
async def test_fetch_reads_content_type_and_rfc5987_filename(fetcher: GuardedFetcher) -> None:
    fetched = await fetcher.fetch("https://files.example/doc?sig=abc")
    assert fetched == FetchedFile(
        content=b"%PDF-1.7 hello",
        mime_type="application/pdf",
        filename="отчёт.pdf",
        url="https://files.example/doc?sig=abc",
    )


async def test_filename_falls_back_to_url_path(fetcher: GuardedFetcher) -> None:
    fetched = await fetcher.fetch("https://files.example/dir/notes.txt")
    assert fetched.filename == "notes.txt"
    assert fetched.mime_type == "text/plain"


async def test_declared_length_over_cap_is_refused(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match="larger than 1024 bytes"):
        await fetcher.fetch("https://files.example/big")


async def test_streamed_body_over_cap_is_refused(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match="larger than 1024 bytes"):
        await fetcher.fetch("https://files.example/streamed")


async def test_per_call_cap_overrides_default(fetcher: GuardedFetcher) -> None:
    fetched = await fetcher.fetch("https://files.example/streamed", max_bytes=4096)
    assert len(fetched.content) == 4096
    with pytest.raises(FetchError, match="larger than 10 bytes"):
        await fetcher.fetch("https://files.example/doc", max_bytes=10)


async def test_relative_redirects_are_followed(fetcher: GuardedFetcher) -> None:
    fetched = await fetcher.fetch("https://files.example/chain/5")
    assert fetched.content == b"end of chain"
    assert fetched.url == "https://files.example/chain/0"


async def test_too_many_redirects(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError, match="more than 5 redirects"):
        await fetcher.fetch("https://files.example/chain/6")


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/admin",
        "http://[::1]/",
        "http://internal.example/dir/notes.txt",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_private_host_is_refused(fetcher: GuardedFetcher, target: str) -> None:
    with pytest.raises(ForbiddenAddress):
        await fetcher.fetch(f"https://files.example/redirect?{httpx.QueryParams({'to': target})}")


async def test_credentials_do_not_follow_cross_origin_redirects(fetcher: GuardedFetcher) -> None:
    auth = {"Authorization": "Bearer provider-token"}
    same = await fetcher.fetch("https://files.example/redirect?to=/auth", headers=auth)
    assert same.content == b"Bearer provider-token"
    other = await fetcher.fetch(
        "https://files.example/redirect?to=https://cdn.example/auth", headers=auth
    )
    assert other.content == b"<none>"


async def test_http_error_status_hides_query_string(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://files.example/missing?access_token=SECRET123")
    assert "HTTP 404" in str(info.value)
    assert "https://files.example/missing" in str(info.value)
    assert "SECRET123" not in str(info.value)


async def test_connection_error_is_mapped_without_query(fetcher: GuardedFetcher) -> None:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://93.184.216.34/file?token=SECRET123")
    message = str(info.value)
    assert "ConnectError" in message
    assert "SECRET123" not in message
    assert "token=" not in message


async def test_total_timeout(client: httpx.AsyncClient, resolver: Resolver) -> None:
    fetcher = GuardedFetcher(client, resolver=resolver, timeout=0.05)
    with pytest.raises(FetchError, match="timed out") as info:
        await fetcher.fetch("https://files.example/hang?token=SECRET123")
    assert "SECRET123" not in str(info.value)


async def test_httpx_timeout_is_mapped(resolver: Resolver) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        fetcher = GuardedFetcher(http, resolver=resolver)
        with pytest.raises(FetchError, match=r"timed out fetching https://files\.example/x$"):
            await fetcher.fetch("https://files.example/x?k=v")


async def test_default_resolver_refuses_localhost_names() -> None:
    # The system resolver is only asked about names; loopback needs no network.
    async with make_client() as http:
        fetcher = GuardedFetcher(http)
        with pytest.raises(ForbiddenAddress):
            await fetcher.check_url("http://127.0.0.1/")
        with pytest.raises(ForbiddenAddress):
            await fetcher.check_url("http://localhost/")


def test_redact_url() -> None:
    assert redact_url("https://u:p@h.example:8443/a/b?x=1#frag") == "https://h.example:8443/a/b"
    assert redact_url("http://[::1]/x?y") == "http://[::1]/x"


async def test_resolver_errors_of_any_address_family(
    client: httpx.AsyncClient,
) -> None:
    async def garbage(host: str) -> list[str]:
        return ["not-an-ip"]

    async def empty(host: str) -> list[str]:
        return []

    with pytest.raises(ForbiddenAddress):
        await GuardedFetcher(client, resolver=garbage).check_url("https://files.example/")
    with pytest.raises(FetchError, match="no addresses"):
        await GuardedFetcher(client, resolver=empty).check_url("https://files.example/")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (
            "attachment; filename*=UTF-8''%E2%82%AC%20rates.txt; filename=\"rates.txt\"",
            "€ rates.txt",
        ),
        ("attachment; filename*=iso-8859-1'en'%A3%20rates.txt", "£ rates.txt"),
        ('inline; filename="a \\"b\\".txt"', 'a "b".txt'),
        ('attachment; filename="semi;colon.txt"', "semi;colon.txt"),
        ("attachment; filename=plain.bin", "plain.bin"),
        ("attachment", None),
    ],
)
def test_disposition_filename(header: str, name: str | None) -> None:
    assert disposition_filename(header) == name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\evil.exe", "evil.exe"),
        ("..", None),
        ("a\x00b\n.txt", "ab.txt"),
    ],
)
def test_clean_filename(raw: str, clean: str | None) -> None:
    assert clean_filename(raw) == clean
