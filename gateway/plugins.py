"""The plugin host: loads plugins through entry points and collects provider classes.

Built-in providers are loaded exactly like third-party ones, from the `gateway.plugins`
entry-point group. A plugin that fails to import is reported by name and skipped, unless
`GATEWAY_PLUGINS_STRICT=1` (for plugin authors) makes it fatal. `GATEWAY_PLUGINS` set to a
comma-separated list of plugin names loads only those.

`GATEWAY_TEST_PLUGINS`, for tests only, names extra plugin modules (comma-separated, e.g.
`gateway.testing.providers`) to load beside the entry points: that is how a `gateway run`
started by a test as a child process gets the test providers, which no entry point offers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from gateway import hookspecs
from gateway.errors import PluginError
from gateway.providers import Provider

log = logging.getLogger("gateway.plugins")

ENTRY_POINT_GROUP = "gateway.plugins"
TEST_PLUGINS_VARIABLE = "GATEWAY_TEST_PLUGINS"


@dataclass(slots=True)
class PluginReport:
    """What happened to one plugin at load time."""

    name: str
    module: str
    loaded: bool
    error: str | None = None
    providers: list[str] = field(default_factory=list)


class PluginHost:
    """A pluggy manager plus the provider classes its plugins registered."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("gateway")
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, type[Provider]] = {}
        self.reports: list[PluginReport] = []

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def load_entry_points(
        self, *, allow: Iterable[str] | None = None, strict: bool | None = None
    ) -> None:
        """Load every plugin of the entry-point group, isolating failures by name."""
        if allow is None:
            raw = os.environ.get("GATEWAY_PLUGINS", "").strip()
            allow = [n.strip() for n in raw.split(",") if n.strip()] if raw else None
        allowed = set(allow) if allow is not None else None
        if strict is None:
            strict = os.environ.get("GATEWAY_PLUGINS_STRICT", "") not in ("", "0", "false")
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen or (allowed is not None and ep.name not in allowed):
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:
                self._fail(ep.name, ep.value, exc, strict)
                continue
            self.add(module, name=ep.name, strict=strict)
        self.load_test_plugins(strict=strict)

    def load_test_plugins(self, *, strict: bool = True) -> None:
        """Load the modules `GATEWAY_TEST_PLUGINS` names (tests only), each named by its path."""
        raw = os.environ.get(TEST_PLUGINS_VARIABLE, "")
        for path in (p.strip() for p in raw.split(",")):
            if not path:
                continue
            try:
                module = importlib.import_module(path)
            except Exception as exc:
                self._fail(path, path, exc, strict)
                continue
            if not self.pm.is_registered(module):
                self.add(module, name=path, strict=strict)

    def add(self, plugin: ModuleType | object, *, name: str, strict: bool = True) -> bool:
        """Register one plugin (a module or an object with hookimpls); False if refused.

        `check_pending()` runs right after, so a misspelled hook name is blamed on this plugin.
        """
        module = getattr(plugin, "__name__", type(plugin).__name__)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(name, module, exc, strict)
            return False
        self.reports.append(PluginReport(name=name, module=module, loaded=True))
        return True

    def _fail(self, name: str, module: str, exc: Exception, strict: bool) -> None:
        message = f"plugin {name!r} ({module}) failed to load: {type(exc).__name__}: {exc}"
        if strict:
            raise PluginError(message) from exc
        log.error(message)
        self.reports.append(PluginReport(name=name, module=module, loaded=False, error=message))

    def collect_providers(self) -> dict[str, type[Provider]]:
        """Call `register_providers` on every plugin; a bad registration is reported by name."""
        self.providers = {}
        for impl in self.pm.hook.register_providers.get_hookimpls():
            registered: list[type[Provider]] = []

            def register(cls: type[Provider], _into: list[type[Provider]] = registered) -> None:
                if not (isinstance(cls, type) and issubclass(cls, Provider)):
                    raise PluginError(f"register() takes a Provider subclass, got {cls!r}")
                if getattr(cls, "kind", None) not in ("channel", "crm"):
                    raise PluginError(
                        f"{cls.__name__} must subclass ChannelProvider or CRMProvider"
                    )
                known = self.providers.get(cls.name)
                if known is not None and known is not cls:
                    raise PluginError(f"provider name {cls.name!r} is already registered")
                _into.append(cls)

            try:
                impl.function(register=register)
            except Exception as exc:
                self._mark_failed(impl.plugin_name, f"register_providers failed: {exc}")
                continue
            for cls in registered:
                self.providers[cls.name] = cls
            for report in self.reports:
                if report.name == impl.plugin_name:
                    report.providers = [cls.name for cls in registered]
        return self.providers

    def _mark_failed(self, plugin_name: str, error: str) -> None:
        message = f"plugin {plugin_name!r}: {error}"
        log.error(message)
        for report in self.reports:
            if report.name == plugin_name:
                report.loaded = False
                report.error = message
