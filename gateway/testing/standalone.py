"""A provider on its own, for unit tests: in-memory state and a hub that records emits.

    fake = FakeGreenApi(settings=ALL_NOTIFICATIONS_ON)
    async with httpx.AsyncClient(mounts=asgi_mounts(fake.app, fake.api_url)) as http:
        provider, hub = standalone_provider(GreenApiProvider, http, {"api_url": ...})

End-to-end behaviour (store, dedupe, routes) is tested with `gateway.testing` instead.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gateway.fetch import GuardedFetcher
from gateway.media import MediaStore
from gateway.models import JSON, AccountState, AccountStatus, InboundEvent
from gateway.phones import phone_digits
from gateway.providers import InstanceContext, MessageTemplate, Provider, ProviderKind, Route

PUBLIC_URL = "http://gateway.test"


class MemoryState:
    """`ProviderState` in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, JSON] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    generation = 0

    async def changed(self) -> None:
        self.generation += 1

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
            async with self._locks[key]:
                yield

        return hold()


class RecordingHub:
    """A `Hub` that keeps what was emitted (deduped by key, like the store) and wakes waiters."""

    def __init__(self, public_url: str = PUBLIC_URL) -> None:
        self.public_url = public_url
        self.events: list[InboundEvent] = []
        self.keys: set[str] = set()
        self.sent_ids: set[str] = set()
        #: Sends another process has under way (`sends_in_flight` is true while above 0).
        self.in_flight = 0
        #: Raise this from the next `emit`, as a store that cannot commit would.
        self.fail_next: Exception | None = None
        self._changed = asyncio.Event()

    async def emit(self, instance: str, events: Sequence[InboundEvent]) -> list[bool]:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        new = []
        for inbound in events:
            fresh = inbound.dedupe_key not in self.keys
            self.keys.add(inbound.dedupe_key)
            if fresh:
                self.events.append(inbound)
            new.append(fresh)
        self._changed.set()
        return new

    async def wait_for(self, count: int, seconds: float = 5.0) -> list[InboundEvent]:
        """Wait until `count` distinct events were emitted."""
        async with asyncio.timeout(seconds):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events

    def states(self) -> list[AccountState]:
        return [e.event for e in self.events if isinstance(e.event, AccountState)]

    def instance_names(self, kind: ProviderKind | None = None) -> list[str]:
        return []

    def provider_of(self, instance: str) -> str:
        return "test-channel"

    def channel_portals(self, channel: str) -> frozenset[str]:
        return frozenset()

    async def account_state(self, instance: str) -> AccountState:
        return AccountState(AccountStatus.UNKNOWN)

    async def routes(self) -> list[Route]:
        return []

    async def add_route(self, route: Route) -> None:
        raise NotImplementedError

    async def remove_route(self, name: str) -> None:
        raise NotImplementedError

    async def import_history(self, route: str, days: float | None = None) -> bool:
        raise NotImplementedError

    def history_days(self) -> float:
        return 0.0

    async def was_sent_by_gateway(self, instance: str, native_id: str) -> bool:
        return native_id in self.sent_ids

    async def sends_in_flight(self, instance: str) -> bool:
        return self.in_flight > 0

    def conversation_for_phone(self, instance: str, phone: str) -> str:
        return phone_digits(phone) + "@c.us"

    async def message_templates(self, instance: str) -> list[MessageTemplate]:
        return []

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        base = f"{self.public_url}/webhooks/{instance}"
        return f"{base}/{subpath.lstrip('/')}" if subpath else base


P = TypeVar("P", bound=Provider)


def asgi_mounts(app: Any, *urls: str) -> dict[str, httpx.AsyncBaseTransport]:
    """httpx mounts sending every host of `urls` to the in-process ASGI `app`."""
    hosts = {httpx.URL(url).host for url in urls}
    return {f"all://{host}": httpx.ASGITransport(app=app) for host in hosts}


def standalone_provider(
    cls: type[P],
    http: httpx.AsyncClient,
    config: Mapping[str, Any],
    *,
    name: str = "wa",
    media_dir: Path = Path("/nonexistent/standalone-test-media"),
) -> tuple[P, RecordingHub]:
    """An instance of provider `cls` on `config`, with in-memory state and a recording hub."""
    hub = RecordingHub()
    context = InstanceContext(
        name=name,
        config=config,
        http=http,
        state=MemoryState(),
        hub=hub,
        media=MediaStore(
            media_dir,
            PUBLIC_URL,
            secret=b"0" * 32,
            max_total_bytes=1 << 20,
            max_file_bytes=1 << 20,
            ttl_seconds=60.0,
        ),
        fetcher=GuardedFetcher(http),
        public_url=PUBLIC_URL,
    )
    return cls(context), hub
