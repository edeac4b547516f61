"""Provider instances: built from the settings, each with its own state in the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.models import JSON
from gateway.providers import InstanceContext, Provider, ProviderKind
from gateway.sealing import Sealer, unsealed
from gateway.settings import GatewaySettings
from gateway.store.base import Store


class InstanceState:
    """Durable key/value storage of one instance, namespaced in the gateway store.

    `generation` counts the changes of this state that any process announced with
    `changed()`, as far as this process has heard (see `shared_state`): a plugin that keeps
    a copy in memory re-reads it when the generation moved.
    """

    def __init__(self, store: Store, namespace: str, *, sealer: Sealer | None = None) -> None:
        self._store = store
        self._namespace = namespace
        self._sealer = sealer
        self.generation = 0

    @property
    def scope(self) -> str:
        return self._namespace

    async def changed(self) -> None:
        """Tell every process (this one included) that copies of this state are stale."""
        self.generation += 1
        await self._store.bump([self._namespace])

    async def get(self, key: str) -> JSON | None:
        value = await self._store.kv_get(self._namespace, key)
        return None if value is None else await self._open(key, value)

    async def put(self, key: str, value: JSON) -> None:
        stored = self._sealer.seal(value) if self._sealer is not None else value
        await self._store.kv_put(self._namespace, key, stored)

    async def delete(self, key: str) -> None:
        await self._store.kv_delete(self._namespace, key)

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]:
        found = await self._store.kv_items(self._namespace, prefix)
        return [(key, await self._open(key, value)) for key, value in found]

    async def _open(self, key: str, value: JSON) -> JSON:
        """The plain value. One in plain text or under an older key is sealed again when it
        is next written: a rewrite here could undo another process's newer write."""
        if self._sealer is None:
            return unsealed(value)
        return self._sealer.open(value)[0]

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._store.lock(f"{self._namespace}:{key}")


def build_instances(
    settings: GatewaySettings,
    providers: Mapping[str, type[Provider]],
    context_for: Callable[[str, Mapping[str, Any]], InstanceContext],
) -> tuple[dict[str, Provider], dict[str, ProviderKind]]:
    """One provider object per configured channel and CRM, and the kind of each."""
    instances: dict[str, Provider] = {}
    kinds: dict[str, ProviderKind] = {}
    for kind, table in (("channel", settings.channels), ("crm", settings.crms)):
        for name, instance in table.items():
            cls = providers[instance.provider]
            instances[name] = cls(context_for(name, instance.options))
            kinds[name] = kind  # type: ignore[assignment]
    return instances, kinds
