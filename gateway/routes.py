"""The route table: which channel talks to which CRM, from the settings and the store.

Routes of the settings come first; routes added at run time (`Hub.add_route`, a Bitrix24
open line linked from its settings page) are kept in the store and loaded at start. Ingest
reads the routes of one instance for every event, so they are indexed by instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.providers import Route
from gateway.store.base import Store, StoredRoute


class RouteTable:
    """Every route of this gateway; changes go through the store first."""

    def __init__(self, store: Store, configured: Iterable[Route] = ()) -> None:
        self._store = store
        self._routes: dict[str, Route] = {route.name: route for route in configured}
        # Routes with an instance at either end, per instance: a gateway with many portals
        # has many routes, few of them per instance.
        self._by_instance: dict[str, list[Route]] = {}

    async def load(self) -> None:
        """The routes of settings.toml (less any a portal switched off), then the store's.

        Called at start and whenever any process announced a change of the routes."""
        routes = {name: r for name, r in self._routes.items() if r.origin == "settings"}
        for stored in await self._store.load_routes():
            routes.setdefault(stored.name, route_from_stored(stored))
        # In place: the delivery workers hold this mapping.
        self._routes.clear()
        self._routes.update(routes)
        self._by_instance.clear()

    def all(self) -> list[Route]:
        return list(self._routes.values())

    def mapping(self) -> Mapping[str, Route]:
        """Name -> route, live (the delivery workers look routes up by name)."""
        return self._routes

    def for_instance(self, instance: str) -> list[Route]:
        routes = self._by_instance.get(instance)
        if routes is None:
            routes = [r for r in self._routes.values() if instance in (r.channel, r.crm)]
            self._by_instance[instance] = routes
        return routes

    async def add(self, route: Route) -> None:
        stored = StoredRoute(route.name, route.channel, route.crm, route.target, route.direction)
        await self._store.save_route(stored)
        self._routes[route.name] = route_from_stored(stored)
        self._by_instance.clear()

    async def remove(self, name: str) -> None:
        await self._store.delete_route(name)
        self._routes.pop(name, None)
        self._by_instance.clear()


def route_from_stored(stored: StoredRoute) -> Route:
    direction = stored.direction if stored.direction in ("both", "inbound", "outbound") else "both"
    return Route(
        name=stored.name,
        channel=stored.channel,
        crm=stored.crm,
        target=stored.target,
        direction=direction,  # type: ignore[arg-type]
        origin="store",
    )
