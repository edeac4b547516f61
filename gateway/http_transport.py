"""The outbound HTTP transport: httpx's client and httpcore's connection pool, with the
sockets driven by asyncio itself rather than through anyio.

httpcore reaches the network through a pluggable backend (`network_backend`). Its default
wraps asyncio in anyio's streams, and every read and write then enters a cancel scope, and
every look at an idle pooled connection ("has the server closed it?") builds anyio's table
of socket attributes anew. In the delivery process that was most of a POST's CPU
(`python -m bench.probes httpx`). `AsyncioBackend` does the same work on an asyncio
`Protocol`: one buffer, one waiter, a timer only while a read or a write actually waits.

Everything above the sockets stays httpx and httpcore: requests, pooling, keep-alive, TLS
settings, exceptions (httpcore's, which httpx maps to its own as usual). Connecting tries a
host's addresses as anyio does (`happy_eyeballs`), which uvloop's own connect does not.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import httpcore
import httpx

from gateway import happy_eyeballs

#: Read ahead at most this much before asking the socket to wait (a large download is read
#: as fast as httpx consumes it, not into memory as fast as the network delivers it).
READ_AHEAD_BYTES = 256 * 1024

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _Connection(asyncio.Protocol):
    """One socket's incoming bytes and state, as the event loop reports them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.reader: asyncio.Future[None] | None = None
        self.drain: asyncio.Future[None] | None = None
        self.paused_reading = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_AHEAD_BYTES and not self.paused_reading and self.transport:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close our side too: httpcore never half-closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake_reader()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def pause_writing(self) -> None:
        if self.drain is None or self.drain.done():
            self.drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def _wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)


def _expire(waiter: asyncio.Future[None], error: type[Exception], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(error(message))


async def _wait(
    waiter: asyncio.Future[None], timeout: float | None, error: type[Exception], message: str
) -> None:
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter, error, message)
    try:
        await waiter
    finally:
        timer.cancel()


class AsyncioStream(httpcore.AsyncNetworkStream):
    """A connected socket (plain or TLS) for httpcore."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.chunks:
            if connection.eof or connection.lost:
                return self._at_end()
            connection.reader = waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(waiter, timeout, httpcore.ReadTimeout, "no data in time")
            finally:
                connection.reader = None
            if not connection.chunks:
                return self._at_end()
        chunk = connection.chunks.popleft()
        if len(chunk) > max_bytes:
            connection.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        connection.buffered -= len(chunk)
        if connection.paused_reading and connection.buffered <= READ_AHEAD_BYTES // 2:
            connection.paused_reading = False
            self._transport.resume_reading()
        return chunk

    def _at_end(self) -> bytes:
        if self._connection.error is not None:
            error = self._connection.error
            raise httpcore.ReadError(str(error) or type(error).__name__) from error
        return b""  # the peer closed cleanly: httpcore decides what that means

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if connection.lost or self._transport.is_closing():
            error = connection.error
            raise httpcore.WriteError(str(error) if error else "the connection is closed")
        self._transport.write(buffer)
        drain = connection.drain
        if drain is not None and not drain.done():
            await _wait(drain, timeout, httpcore.WriteTimeout, "could not write in time")
            if connection.lost:
                raise httpcore.WriteError(str(connection.error or "the connection was lost"))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                upgraded = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if upgraded is None:  # the loop closed the connection during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._connection.transport = upgraded
        return AsyncioStream(upgraded, self._connection)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of every idle pooled connection before each request: an
            # idle connection with something to read has been closed by the server.
            connection = self._connection
            if connection.chunks or connection.eof or connection.lost:
                return True
            return _readable(self._transport.get_extra_info("socket"))
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


def _readable(sock: Any) -> bool:
    if sock is None:
        return True
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return True
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on plain asyncio (uvloop's or the standard loop)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._connect(_open_tcp(host, port, local_address), timeout)
        _apply(stream, socket_options)  # TCP_NODELAY is set by the loop already
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        stream = await self._connect(loop.create_unix_connection(_Connection, path), timeout)
        _apply(stream, socket_options)
        return stream

    @staticmethod
    async def _connect(
        opening: Awaitable[tuple[asyncio.Transport, _Connection]], timeout: float | None
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await opening
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"could not connect in {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return AsyncioStream(transport, connection)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _open_tcp(
    host: str, port: int, local_address: str | None
) -> tuple[asyncio.Transport, _Connection]:
    sock = await happy_eyeballs.open_socket(host, port, local_address)
    try:
        return await asyncio.get_running_loop().create_connection(_Connection, sock=sock)
    except BaseException:
        sock.close()
        raise


def _apply(stream: AsyncioStream, options: Iterable[SocketOption] | None) -> None:
    sock: socket.socket | None = stream.get_extra_info("socket")
    for option in options or ():
        if sock is not None:
            sock.setsockopt(*option)


class AsyncioTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose connection pool uses `AsyncioBackend`."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        # Not super().__init__: it would build a pool on anyio's backend only to drop it.
        # httpx's own request and exception mapping (`handle_async_request`) use this pool.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend or AsyncioBackend(),
        )
