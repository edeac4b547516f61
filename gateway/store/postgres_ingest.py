"""The PostgreSQL store's ingest, grouped per loop turn (`group.TickGroup`) like SQLite's,
but each caller's rows are still one INGEST statement of their own (one round trip, one
commit), the statements of a group running side by side on the pool's connections.

Combining a group into one statement was measured (`python -m bench.bench_postgres`) and
is not done: a statement with many conversations' jobs takes many lanes' row locks, and
it deadlocked against the transactions that lock lanes (`lock_lanes` in finish and
`place_late`, other processes' ingests); each deadlock costs PostgreSQL's
`deadlock_timeout` (1 s), and ingest fell from about 700 to under 150 webhooks a second.
One webhook's statement locks one lane, as before. A caller whose statement fails fails
alone; a database that is down fails each of them (and each webhook is answered 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias

from gateway.errors import StoreError
from gateway.store import postgres_queue as q
from gateway.store.group import TickGroup

_IngestRow: TypeAlias = tuple[str, str, bytes, list[q.JobRow], bool, str | None, str | None]
_IngestRequest: TypeAlias = tuple[list[_IngestRow], float]
_IngestOutcome: TypeAlias = list[int | None] | BaseException
Run: TypeAlias = Callable[..., Awaitable[Any]]


class GroupedIngest:
    """`await submit((rows, now))`: the new event ids of `rows` (None: duplicate)."""

    def __init__(
        self,
        run: Run,
        announce: Callable[[Iterable[str]], None],
        announce_state: Callable[[], None],
    ) -> None:
        self._store_run = run
        self._announce = announce
        self._announce_state = announce_state
        self._group: TickGroup[_IngestRequest, list[int | None]] = TickGroup(
            lambda requests: asyncio.ensure_future(self._batch(requests))
        )

    async def submit(self, request: _IngestRequest) -> list[int | None]:
        return await self._group.submit(request)

    async def drain(self) -> None:
        await self._group.drain()

    @property
    def batches(self) -> int:
        return self._group.batches

    async def _batch(self, requests: Sequence[_IngestRequest]) -> list[_IngestOutcome]:
        found = await asyncio.gather(
            *(self._ingest_rows([request]) for request in requests), return_exceptions=True
        )
        outcomes: list[_IngestOutcome] = []
        for result in found:
            if isinstance(result, StoreError):
                outcomes.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                outcomes.extend(result)
        return outcomes

    async def _ingest_rows(self, requests: Sequence[_IngestRequest]) -> list[list[int | None]]:
        """One INGEST statement per distinct `now` (one per caller, as `_batch` calls it);
        the statement keeps the first of several rows with one dedupe key."""
        parts: dict[float, list[_IngestRow]] = {}
        for rows, now in requests:
            parts.setdefault(now, []).extend(rows)
        if len(parts) == 1:
            [(now, rows)] = parts.items()
            found = [await self._store_run(lambda c: q.ingest(c, rows, now))]
        else:

            async def each(c: q.Conn) -> list[tuple[list[int | None], bool, list[int]]]:
                return [await q.ingest(c, rows, now) for now, rows in parts.items()]

            found = await self._store_run(each, transaction=True)
        ids_by_now = {now: iter(ids) for now, (ids, _, _) in zip(parts, found, strict=True)}
        late = sorted({job for _, _, jobs in found for job in jobs})
        if late:
            await self._store_run(lambda c: q.place_late(c, late), transaction=True)
        results = [[next(ids_by_now[now]) for _ in rows] for rows, now in requests]
        self._announce(
            job[3]
            for (rows, _), ids in zip(requests, results, strict=True)
            for row, n in zip(rows, ids, strict=True)
            if n
            for job in row[3]
        )
        if any(held for _, held, _ in found):
            self._announce_state()
        return results
