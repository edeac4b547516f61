"""The one way the core calls plugin hooks: each implementation isolated, failures named.

A plugin's hook that raises is logged with the hook's and the plugin's name and skipped; the
gateway and the other plugins go on. Only `filter_message` (inside the webhook request,
before the commit) and `register_providers` (with its own report) are called otherwise.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any

import pluggy

log = logging.getLogger("gateway.plugins")


class _Failed:
    """The result of an implementation that raised (already logged)."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED: Any = _Failed()


def call_isolated(impl: pluggy.HookImpl, hook: str, **kwargs: Any) -> Any:
    """`impl` called with the arguments it names (pluggy lets an implementation take fewer
    than the spec); on an exception, log it naming `hook` and the plugin, return FAILED."""
    try:
        return impl.function(*(kwargs[name] for name in impl.argnames))
    except Exception as exc:
        log.error(
            "%s hook of plugin %s failed: %s: %s",
            hook,
            impl.plugin_name,
            type(exc).__name__,
            exc,
            exc_info=True,
        )
        return FAILED


def call_each(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call every implementation of `hook`, isolated; their results (FAILED for failures)."""
    return [call_isolated(impl, hook.name, **kwargs) for impl in hook.get_hookimpls()]


async def call_each_async(hook: pluggy.HookCaller, **kwargs: Any) -> None:
    """Like `call_each`, awaiting the implementations that return an awaitable."""
    for impl in hook.get_hookimpls():
        result = call_isolated(impl, hook.name, **kwargs)
        if inspect.isawaitable(result):
            try:
                await result
            except Exception as exc:
                log.error(
                    "%s hook of plugin %s failed: %s: %s",
                    hook.name,
                    impl.plugin_name,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )


def succeeded(results: Iterable[Any]) -> list[Any]:
    """The results of the implementations that did not fail."""
    return [r for r in results if r is not FAILED]
