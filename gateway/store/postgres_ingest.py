"""Group commit of the PostgreSQL store's ingest: the webhooks of one loop turn become one
INGEST statement (one round trip, one commit; see `group.TickGroup`).

The statement keeps the first of several rows with one dedupe key, so callers grouped
together dedupe exactly as they would one after the other. If the group's statement fails,
each caller is tried alone, so a row only one caller sent fails only that caller; a
database that is down fails each of them (and each webhook is answered 503).
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
        try:
            return list(await self._ingest_rows(requests))
        except StoreError:
            if len(requests) == 1:
                raise
        # The group failed as a whole: each caller alone, so one caller's bad row fails
        # only that caller (a database that is down fails each of them again).
        outcomes: list[_IngestOutcome] = []
        for request in requests:
            try:
                outcomes.extend(await self._ingest_rows([request]))
            except StoreError as exc:
                outcomes.append(exc)
        return outcomes

    async def _ingest_rows(self, requests: Sequence[_IngestRequest]) -> list[list[int | None]]:
        """One INGEST statement per distinct `now` (one in practice): the statement keeps
        the first of several rows with one dedupe key, so callers in a group dedupe as
        they would one after the other."""
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
