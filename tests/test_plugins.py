"""The plugin host and every hook, exercised through a real gateway."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute

from gateway import PluginContext
from gateway.errors import PluginError
from gateway.hookspecs import hookimpl
from gateway.models import Message
from gateway.plugins import PluginHost
from gateway.providers import ChannelProvider
from gateway.testing import Recorder, running_gateway

pytestmark = pytest.mark.anyio

BUILT_INS = {"bitrix24", "chatapi", "greenapi", "cloudapi", "fakes"}


def install_fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **plugins: str
) -> None:
    """Make `plugins` (name -> module source) visible as entry points of a dist on sys.path."""
    dist = tmp_path / "thirdparty_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-plugins\nVersion: 1.0\n"
    )
    lines = ["[gateway.plugins]"]
    for name, source in plugins.items():
        module = f"thirdparty_{name}"
        (tmp_path / f"{module}.py").write_text(source)
        lines.append(f"{name} = {module}")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in plugins:
        sys.modules.pop(f"thirdparty_{name}", None)


GOOD_PLUGIN = """
from gateway.hookspecs import hookimpl
from gateway.providers import ChannelProvider

class Pigeon(ChannelProvider):
    name = "pigeon"

@hookimpl
def register_providers(register):
    register(Pigeon)
"""


def test_built_in_plugins_load_through_entry_points() -> None:
    host = PluginHost()
    host.load_entry_points()
    providers = host.collect_providers()
    loaded = {r.name for r in host.reports if r.loaded}
    assert loaded >= BUILT_INS
    assert {"bitrix24", "chatapi", "greenapi", "cloudapi"} <= set(providers)
    # The test providers are no production entry point: `gateway plugins` does not offer them.
    assert not {"test-channel", "test-crm"} & set(providers)


def test_test_plugins_load_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_PLUGINS", "gateway.testing.providers")
    monkeypatch.setenv("GATEWAY_PLUGINS", "chatapi")
    host = PluginHost()
    host.load_entry_points()
    assert [r.name for r in host.reports] == ["chatapi", "gateway.testing.providers"]
    assert {"chatapi", "test-channel", "test-crm"} == set(host.collect_providers())


def test_a_broken_plugin_is_reported_by_name_and_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_fake_distribution(
        tmp_path, monkeypatch, broken="raise RuntimeError('boom at import')", pigeon=GOOD_PLUGIN
    )
    host = PluginHost()
    with caplog.at_level(logging.ERROR):
        host.load_entry_points(strict=False)
    reports = {r.name: r for r in host.reports}
    assert not reports["broken"].loaded
    assert "boom at import" in (reports["broken"].error or "")
    assert "'broken'" in caplog.text
    assert "pigeon" in host.collect_providers()


def test_strict_mode_makes_a_broken_plugin_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_distribution(tmp_path, monkeypatch, broken="import no_such_module_anywhere")
    monkeypatch.setenv("GATEWAY_PLUGINS_STRICT", "1")
    with pytest.raises(PluginError, match="broken"):
        PluginHost().load_entry_points()


def test_the_allowlist_limits_what_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_TEST_PLUGINS", raising=False)
    monkeypatch.setenv("GATEWAY_PLUGINS", "chatapi")
    host = PluginHost()
    host.load_entry_points()
    assert [r.name for r in host.reports] == ["chatapi"]


def test_a_misspelled_hook_is_caught_and_blamed_on_its_plugin() -> None:
    class Typo:
        @hookimpl
        def register_provider(self, register: Any) -> None:  # missing "s"
            pass

    host = PluginHost()
    assert host.add(Typo(), name="typo", strict=False) is False
    assert "typo" in (host.reports[-1].error or "")
    with pytest.raises(PluginError, match="register_provider"):
        PluginHost().add(Typo(), name="typo")


def test_registering_something_that_is_not_a_provider_is_reported() -> None:
    class Bad:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(dict)

    class Unnamed(ChannelProvider):
        name = "fine"

    class Good:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(Unnamed)

    host = PluginHost()
    host.add(Bad(), name="bad")
    host.add(Good(), name="good")
    providers = host.collect_providers()
    assert "fine" in providers
    bad = next(r for r in host.reports if r.name == "bad")
    assert not bad.loaded and "Provider subclass" in (bad.error or "")


def settings(tmp_path: Path) -> dict[str, Any]:
    return {
        "public_url": "http://gateway.test",
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "media": {"directory": str(tmp_path / "media")},
        "workers": {"poll_interval": 0.05},
        "channels": {
            "wa": {"provider": "test-channel", "base_url": "http://channel.test", "token": "t"}
        },
        "crms": {"crm": {"provider": "test-crm", "base_url": "http://crm.test", "token": "c"}},
        "routes": {"main": {"channel": "wa", "crm": "crm"}},
    }


class LifecyclePlugin:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    async def startup(self, context: PluginContext) -> None:
        greeting = context.settings("lifecycle").get("greeting")
        self.events.append(f"startup:{sorted(context.hub.instance_names())}:{greeting}")

    @hookimpl
    def shutdown(self, context: PluginContext) -> None:
        self.events.append("shutdown")

    @hookimpl
    def http_routes(self, context: PluginContext) -> list[HttpRoute]:
        async def hello(_request: Request) -> Response:
            routes = [route.name for route in await context.hub.routes()]
            return JSONResponse(
                {"instances": context.hub.instance_names("channel"), "routes": routes}
            )

        return [HttpRoute("/hello", hello)]


class FailingStartup:
    @hookimpl
    def startup(self) -> None:
        raise RuntimeError("this plugin cannot start")


async def test_lifecycle_and_route_hooks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = LifecyclePlugin()
    recorder = Recorder()
    apps = {"channel.test": recorder.app, "crm.test": recorder.app}
    with caplog.at_level(logging.ERROR):
        configured = {**settings(tmp_path), "plugins": {"Lifecycle": {"greeting": "hi"}}}
        async with running_gateway(configured, apps=apps, plugins=[plugin, FailingStartup()]) as h:
            response = await h.client.get("/hello")
            assert response.json() == {"instances": ["wa"], "routes": ["main"]}
    assert plugin.events == ["startup:['crm', 'wa']:hi", "shutdown"]
    assert "cannot start" in caplog.text  # reported, and the gateway still ran


class Filter:
    @hookimpl
    def filter_message(self, message: Message, route: Any, source: str) -> Message | bool | None:
        if message.text == "spam":
            return False
        if message.text == "shout":
            return dataclasses.replace(message, text="SHOUT")
        return None


async def test_filter_and_observe_hooks(tmp_path: Path) -> None:
    channel, crm = Recorder(name="channel"), Recorder(name="crm")
    apps = {"channel.test": channel.app, "crm.test": crm.app}
    async with running_gateway(settings(tmp_path), apps=apps, plugins=[Filter()]) as h:
        for i, text in enumerate(["spam", "shout", "plain"]):
            body = {"messages": [{"id": f"m{i}", "chat": "c", "text": text}]}
            await h.client.post("/webhooks/wa", json=body, headers={"Authorization": "Bearer t"})
        await crm.wait_count(2)
        observed = await h.observer.wait_for("delivered", 2)
    assert crm.texts() == ["SHOUT", "plain"]
    assert len(h.observer.of_type("accepted")) == 3
    assert {o.instance for o in observed} == {"crm"}


HELLO_PLUGIN = """
from gateway.hookspecs import hookimpl

def hello(args):
    print(f"hello {args.name}")
    return 3

@hookimpl
def cli_commands(command):
    command("hello", hello, "say hello").add_argument("--name", default="world")
"""

BROKEN_COMMANDS = """
from gateway.hookspecs import hookimpl

@hookimpl
def cli_commands(command):
    raise RuntimeError("no commands today")
"""


def test_plugins_add_cli_commands_and_a_failing_one_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway import cli

    install_fake_distribution(tmp_path, monkeypatch, hello=HELLO_PLUGIN, grumpy=BROKEN_COMMANDS)
    with caplog.at_level(logging.ERROR):
        assert cli.main(["hello", "--name", "plugin"]) == 3
    assert "hello plugin" in capsys.readouterr().out
    assert "plugin grumpy failed" in caplog.text and "no commands today" in caplog.text
    # The fakes contribute `gateway demo`; the built-in commands stay as they were.
    assert cli.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "demo" in help_text and "hello" in help_text and "dead-letters" in help_text
