"""An open-loop HTTP/1.1 load generator: requests leave on a fixed schedule, not when the
previous one is answered, so a slow server shows up as latency instead of a lower rate.

Plain asyncio streams over keep-alive connections (wrk has no open-loop mode, and wrk2 is
not packaged by Debian). Each request's time is taken from its schedule (so queueing in
the generator counts against the server), when it was written, and when its answer came.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Sample:
    scheduled: float
    sent: float
    answered: float
    status: int


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, float]:
    writer.write(raw)
    sent = time.time()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status, sent


def build_request(host: str, path: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def open_loop(
    host: str, port: int, requests: Sequence[bytes], rate: float, connections: int
) -> list[Sample]:
    """Send `requests` at `rate` per second over up to `connections` connections."""
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = []
    for _ in range(connections):
        pair = await asyncio.open_connection(host, port)
        opened.append(pair[1])
        idle.put_nowait(pair)
    samples: list[Sample | None] = [None] * len(requests)

    async def one(index: int, scheduled: float) -> None:
        reader, writer = await idle.get()
        try:
            status, sent = await _request(reader, writer, requests[index])
        finally:
            idle.put_nowait((reader, writer))
        samples[index] = Sample(scheduled, sent, time.time(), status)

    tasks = []
    start = time.time() + 0.05
    for index in range(len(requests)):
        scheduled = start + index / rate
        delay = scheduled - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    for writer in opened:
        writer.close()
    return [s for s in samples if s is not None]
