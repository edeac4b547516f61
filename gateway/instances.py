"""Provider instances: built from the settings, each with its own state in the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.models import JSON
from gateway.providers import InstanceContext, Provider, ProviderKind
from gateway.settings import GatewaySettings
from gateway.store.base import Store


class InstanceState:
    """Durable key/value storage of one instance, namespaced in the gateway store.

    `generation` counts the changes of this state that any process announced with
    `changed()`, as far as this process has heard (see `shared_state`): a plugin that keeps
    a copy in memory re-reads it when the generation moved.
    """

    def __init__(self, store: Store, namespace: str) -> None:
        self._store = store
        self._namespace = namespace
        self.generation = 0

    @property
    def scope(self) -> str:
        return self._namespace

    async def changed(self) -> None:
        """Tell every process (this one included) that copies of this state are stale."""
        self.generation += 1
        await self._store.bump([self._namespace])

    async def get(self, key: str) -> JSON | None:
        return await self._store.kv_get(self._namespace, key)

    async def put(self, key: str, value: JSON) -> None:
        await self._store.kv_put(self._namespace, key, value)

    async def delete(self, key: str) -> None:
        await self._store.kv_delete(self._namespace, key)

    async def items(self, prefix: str = "") -> list[tuple[str, JSON]]:
        return await self._store.kv_items(self._namespace, prefix)

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
