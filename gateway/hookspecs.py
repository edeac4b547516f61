"""Every hook a plugin can implement, each with a one-line docstring.

Signatures are documented in docs/plugins.md. Implement them with `@gateway.hookimpl`;
an implementation may take fewer arguments than the spec, never others. Providers are
classes registered through `register_providers`; the real work lives in them. The lifecycle
and route hooks get a `PluginContext` (`context`), never the gateway itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from starlette.routing import BaseRoute

    from gateway.models import Message
    from gateway.observe import Observation
    from gateway.ports import PluginContext
    from gateway.providers import Provider, Route

hookspec = pluggy.HookspecMarker("gateway")
#: Marks a hook implementation: `@hookimpl` on a module-level function or a method named
#: like the hook (`gateway.hookimpl` for plugins).
hookimpl = pluggy.HookimplMarker("gateway")


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register channel and CRM provider classes by calling `register(cls)` for each."""


@hookspec
def startup(context: PluginContext) -> Any:
    """Run once after the gateway has started its instances; may return an awaitable."""


@hookspec
def shutdown(context: PluginContext) -> Any:
    """Run once before the gateway stops its instances; may return an awaitable."""


@hookspec
def http_routes(context: PluginContext) -> list[BaseRoute] | None:
    """Return extra Starlette routes to serve next to the gateway's own (built before the
    gateway starts: use `context` in the handlers)."""


@hookspec
def filter_message(message: Message, route: Route, source: str) -> Message | bool | None:
    """Return False to drop a message on a route, a Message to replace it, None to keep it."""


@hookspec
def observe(observation: Observation) -> None:
    """Receive every pipeline observation (accepted, delivered, retried, dead-lettered, state)."""


@hookspec
def cli_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add `gateway` sub-commands: `command(name, handler, help)` returns the sub-parser."""
