"""The outbound transport (`gateway.http_transport`): httpx's client and httpcore's pool on
sockets driven by asyncio. Each test talks to a small raw HTTP server on loopback, so the
server can misbehave the way real ones do (close idle connections, stall, reset, stream)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from gateway import happy_eyeballs, services
from gateway.http_transport import READ_AHEAD_BYTES, AsyncioBackend, AsyncioTransport

pytestmark = pytest.mark.anyio

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Counts connections and requests; `handler` answers each request and says whether
    to keep the connection open."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head.split(b"\r\n", 1)[0] + b" " + body)
                if not await self.handler(head, reader, writer):
                    return
        finally:
            writer.close()
            self.closed.set()


def answer(body: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def echo(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b"ok"))
    await writer.drain()
    return True


@asynccontextmanager
async def serving(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[Server, str]]:
    server = Server(handler)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listener.close()


def client(**options: object) -> httpx.AsyncClient:
    verify = options.pop("verify", True)
    assert isinstance(verify, ssl.SSLContext | bool)
    return httpx.AsyncClient(transport=AsyncioTransport(verify=verify), **options)  # type: ignore[arg-type]


async def test_requests_share_one_kept_alive_connection() -> None:
    async with serving(echo) as (server, url), client() as http:
        for n in range(5):
            response = await http.post(f"{url}/send", content=b"message %d" % n)
            assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 1
    assert server.requests[-1] == b"POST /send HTTP/1.1 message 4"


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"ok"))  # keep-alive as far as the client knows, then gone
        await writer.drain()
        return False

    async with serving(once) as (server, url), client() as http:
        assert (await http.get(f"{url}/a")).status_code == 200
        await server.closed.wait()
        # The next request must go out on a new connection, not fail on the dead one.
        assert (await http.get(f"{url}/b")).status_code == 200
    assert server.connections == 2


async def test_chunked_and_streamed_bodies_arrive_whole() -> None:
    big = bytes(range(256)) * (4 * READ_AHEAD_BYTES // 256)  # past the read-ahead limit

    async def stream(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(big), 100_000):
            piece = big[start : start + 100_000]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async with serving(stream) as (_, url), client() as http:
        received = bytearray()
        async with http.stream("GET", f"{url}/file") as response:
            async for chunk in response.aiter_bytes():
                received += chunk
        assert bytes(received) == big
        assert (await http.get(f"{url}/again")).content == big  # the connection was kept


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def stall(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await reader.read()  # never answers; returns when the client gives up
        return False

    async with serving(stall) as (_, url), client(timeout=httpx.Timeout(0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{url}/slow")


async def test_a_reset_mid_answer_is_a_transport_error() -> None:
    async def cut(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.transport.abort()
        return False

    async with serving(cut) as (_, url), client() as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{url}/partial")


async def test_refused_connection_is_a_connect_error() -> None:
    async with serving(echo) as (_, url):
        pass  # closed: nothing listens on that port now
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/gone")


async def test_tls_is_verified_against_the_given_authority(tmp_path: Path) -> None:
    from gateway_fakes.tls import make_certificates

    certificates = make_certificates(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(certificates.cert, certificates.key)
    trusting = httpx.create_ssl_context()
    trusting.load_verify_locations(cafile=certificates.ca)
    async with serving(echo, tls=server_side) as (server, url):
        async with client(verify=trusting) as http:
            assert (await http.get(f"{url}/a")).content == b"ok"
            assert (await http.get(f"{url}/b")).content == b"ok"
        assert server.connections == 1
        async with client() as http:  # the system's authorities do not know this one
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"{url}/a")


async def test_the_gateway_client_uses_it_unless_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)

    async def backend_of(http: httpx.AsyncClient) -> object:
        async with serving(echo) as (_, url):
            assert (await http.get(f"{url}/x")).status_code == 200
        return type(http._transport)

    async with services.http_client() as http:
        assert await backend_of(http) is AsyncioTransport
    # httpx honours proxies from the environment only with the transport it builds itself.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    async with services.http_client() as http:
        assert type(http._transport) is httpx.AsyncHTTPTransport


def test_backend_is_what_the_pool_connects_with() -> None:
    transport = AsyncioTransport()
    # If httpx renames the attribute, requests would silently go through anyio again.
    assert isinstance(transport._pool._network_backend, AsyncioBackend)


def _info(family: socket.AddressFamily, address: tuple[str, int]) -> happy_eyeballs.AddressInfo:
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)


def test_addresses_alternate_families_first_family_first() -> None:
    v6 = [_info(socket.AF_INET6, (f"2001:db8::{n}", 443)) for n in (1, 2, 3)]
    v4 = [_info(socket.AF_INET, (f"192.0.2.{n}", 443)) for n in (1, 2)]
    mixed = happy_eyeballs.interleave([*v6, *v4])
    assert [info[4][0] for info in mixed] == [
        "2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "2001:db8::3",
    ]  # fmt: skip
    assert happy_eyeballs.interleave(v4) == v4


@pytest.fixture
def silent_address() -> Iterator[tuple[str, int]]:
    """A loopback address that never answers a connect: a listener whose accept queue is
    full drops new SYNs, as a host behind a broken route does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    yield listener.getsockname()
    for sock in [listener, *fillers]:
        sock.close()


async def test_an_address_that_never_answers_does_not_hold_up_the_next(
    silent_address: tuple[str, int],
) -> None:
    async with serving(echo) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        infos = [_info(socket.AF_INET, silent_address), _info(socket.AF_INET, ("127.0.0.1", port))]
        sock = await happy_eyeballs.race(infos, None, 0.05, "example.test")
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()


async def test_every_address_failing_names_them_all() -> None:
    async with serving(echo) as (_, url):
        port = int(url.rsplit(":", 1)[1])
    refused = [_info(socket.AF_INET, ("127.0.0.1", port))] * 2  # nothing listens now
    with pytest.raises(OSError, match=r"cannot connect to example\.test: .*; .*"):
        await happy_eyeballs.race(refused, None, 0.05, "example.test")


async def test_a_name_is_resolved_and_its_addresses_tried() -> None:
    # "localhost" may resolve to ::1 first; the server listens on 127.0.0.1 only.
    async with serving(echo) as (server, url), client() as http:
        port = int(url.rsplit(":", 1)[1])
        assert (await http.get(f"http://localhost:{port}/a")).content == b"ok"
    assert server.connections == 1


async def test_the_gateway_client_keeps_no_cookie_a_server_set() -> None:
    # One client serves every tenant: a cookie kept from one instance's answer would go
    # out with another instance's request to the same provider host.
    async def set_then_echo(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        sent = [line for line in head.split(b"\r\n") if line.lower().startswith(b"cookie:")]
        writer.write(answer(b"|".join(sent), extra=b"Set-Cookie: session=tenant-a; Path=/\r\n"))
        await writer.drain()
        return True

    async with serving(set_then_echo) as (_, url):
        async with client() as plain:
            await plain.get(f"{url}/a")
            assert (await plain.get(f"{url}/b")).content == b"Cookie: session=tenant-a"
        async with services.http_client() as http:
            first = await http.get(f"{url}/instance-a")
            assert first.headers["set-cookie"] == "session=tenant-a; Path=/"
            assert (await http.get(f"{url}/instance-b")).content == b""
            # A provider that needs a cookie sends it itself.
            asked = await http.get(f"{url}/own", headers={"Cookie": "own=1"})
            assert asked.content == b"Cookie: own=1"
