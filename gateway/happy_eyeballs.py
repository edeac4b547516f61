"""Opening a TCP connection to a host with several addresses (RFC 8305, "happy eyeballs").

uvloop's `create_connection` tries a host's addresses one after another, each until the
connect timeout: on a server whose IPv6 route is broken, every call to a provider that
publishes an IPv6 address would wait out the whole timeout and fail. Like anyio (httpx's
default), the next address is tried as soon as the previous one fails or has had
`DELAY` seconds without an answer, families alternating; the first socket that connects
wins and every other attempt is cancelled and closed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

#: RFC 8305's recommended "connection attempt delay".
DELAY = 0.25

AddressInfo = tuple[Any, ...]  # one entry of getaddrinfo: family, type, proto, name, address


def interleave(infos: Sequence[AddressInfo]) -> list[AddressInfo]:
    """The addresses families alternating, the resolver's first family first."""
    if not infos:
        return []
    first = infos[0][0]
    preferred = [info for info in infos if info[0] == first]
    others = [info for info in infos if info[0] != first]
    mixed: list[AddressInfo] = []
    for index in range(max(len(preferred), len(others))):
        mixed += preferred[index : index + 1] + others[index : index + 1]
    return mixed


async def open_socket(
    host: str, port: int, local_address: str | None = None, delay: float = DELAY
) -> socket.socket:
    """A connected non-blocking socket to `host`; OSError naming every address that failed."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return await race(interleave(infos), local_address, delay, host)


async def race(
    infos: Sequence[AddressInfo], local_address: str | None, delay: float, host: str
) -> socket.socket:
    if not infos:
        raise OSError(f"{host} has no address")
    errors: list[str] = []
    running: set[asyncio.Task[socket.socket]] = set()
    try:
        for info in infos:
            running.add(asyncio.create_task(_attempt(info, local_address)))
            if won := await _settle(running, errors, delay):
                return won
        while running:
            if won := await _settle(running, errors, None):
                return won
    finally:
        for task in running:
            task.cancel()
        for result in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(result, socket.socket):  # connected just as another won
                result.close()
    raise OSError(f"cannot connect to {host}: " + "; ".join(errors))


async def _settle(
    running: set[asyncio.Task[socket.socket]], errors: list[str], patience: float | None
) -> socket.socket | None:
    """Wait for an attempt to end (at most `patience` s); the first socket connected, if any."""
    done, _ = await asyncio.wait(running, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
    won: socket.socket | None = None
    for task in done:
        running.discard(task)
        error = task.exception()
        if error is not None:
            errors.append(str(error) or type(error).__name__)
        elif won is None:
            won = task.result()
        else:
            task.result().close()
    return won


async def _attempt(info: AddressInfo, local_address: str | None) -> socket.socket:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if local_address:
            sock.bind((local_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock
