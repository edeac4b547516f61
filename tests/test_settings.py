"""Settings: layers (file, .secrets.toml, variables, overrides), validation, provenance."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.errors import ConfigError, ConfigProblem
from gateway.hookspecs import hookimpl
from gateway.plugins import PluginHost
from gateway.providers import ChannelProvider, CRMProvider, Provider
from gateway.settings import (
    FetchSettings,
    GatewaySettings,
    MediaSettings,
    RetrySettings,
    WorkerSettings,
    check_settings,
    load_settings,
    secret_values,
    settings_from_mapping,
    validate_instances,
)

REPO = Path(__file__).resolve().parents[1]


class FakeChannel(ChannelProvider):
    name = "fakechat"
    description = "a channel for tests"
    required_settings: ClassVar[dict[str, str]] = {
        "base_url": "the API URL",
        "token": "the API token",
    }
    optional_settings: ClassVar[dict[str, Any]] = {"webhook_secret": "", "timeout": 10}
    secret_settings = frozenset({"token", "webhook_secret"})


class FakeCRM(CRMProvider):
    name = "fakecrm"
    required_settings: ClassVar[dict[str, str]] = {
        "client_id": "the app id",
        "client_secret": "the app secret",
    }
    secret_settings = frozenset({"client_secret"})


class FakePlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(FakeChannel)
        register(FakeCRM)


@pytest.fixture
def providers() -> dict[str, type[Provider]]:
    host = PluginHost()
    host.add(FakePlugin(), name="test")
    return host.collect_providers()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def pairs(problems: list[ConfigProblem]) -> set[tuple[str, str]]:
    return {(p.file, p.key) for p in problems}


def problems_of(
    path: str | None, environ: dict[str, str] | None = None, **kw: Any
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {}, **kw)
    return caught.value.problems


GOOD = """
public_url = "https://gw.example.com/"
[channels.wa1]
provider = "fakechat"
base_url = "https://api.example.com"
[crms.b24]
provider = "fakecrm"
client_id = "app.1"
[routes.main]
channel = "wa1"
crm = "b24"
target = 1
"""


def test_repo_defaults_start_with_zero_instances() -> None:
    settings = load_settings(str(REPO / "settings.toml"), environ={})
    assert settings.public_url == "http://127.0.0.1:8080"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.store_url == "sqlite:///var/gateway.db"
    assert settings.admin_token is None
    assert settings.channels == settings.crms == {} and settings.routes == []
    assert validate_instances(settings, {}) == []


def test_example_files_document_and_load_every_key(tmp_path: Path) -> None:
    example = (REPO / "config" / "settings.example.toml").read_text()
    data = tomllib.loads(example)
    for key in ("public_url", "host", "port", "max_body_bytes", "log_level", "log_format"):
        assert key in data, key
    assert "url" in data["store"]
    assert "# token =" in example  # documented, and left unset on purpose
    sections = {
        "retry": RetrySettings,
        "workers": WorkerSettings,
        "media": MediaSettings,
        "fetch": FetchSettings,
    }
    for section, cls in sections.items():
        assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, section
    folder = tmp_path / "etc"
    folder.mkdir()
    write(folder / "settings.toml", example)
    write(folder / ".secrets.toml", (REPO / "config" / "secrets.example.toml").read_text())
    settings, problems = check_settings(str(folder / "settings.toml"), environ={})
    assert problems == []
    assert settings.admin_token and set(settings.channels) == {"wa_chatapi", "wa_green", "wa_cloud"}
    assert settings.channels["wa_cloud"].options["access_token"] == "EAAG-system-user-token"


def test_broken_settings_list_every_problem_with_file_and_key(tmp_path: Path) -> None:
    main = write(
        tmp_path / "settings.toml",
        """
public_url = "ftp://gw.example.com"
prot = 8080
port = "eighty"
log_level = "LOUD"
log_format = "xml"
max_body_bytes = 0
store_url = "sqlite:///x.db"
[retry]
base_delay = -1
max_delay = "soon"
jitter = 2.5
max_attempt = 3
[workers]
concurrency = 0
lease_seconds = 0
[media]
max_file_bytes = 2048
max_total_bytes = 1024
[fetch]
allow_private = "yes"
allowed_hosts = [1, 2]
[channels."WA 1"]
provider = "fakechat"
[channels.wa2]
base_url = "x"
[routes.main]
channel = "wa2"
direction = "sideways"
""",
    )
    secrets = write(tmp_path / ".secrets.toml", '[admin]\ntoken = ["not", "a", "string"]\n')
    env = {"GATEWAY_WORKERS__POLL_INTERVAL": "-5", "GATEWAY_ADMIN_TOKEN": "x"}
    problems = problems_of(main, env)
    poll, typo = (f"environment variable {name}" for name in env)
    assert pairs(problems) == {
        (main, "public_url"),
        (main, "prot"),
        (main, "port"),
        (main, "log_level"),
        (main, "log_format"),
        (main, "max_body_bytes"),
        (main, "store_url"),
        (main, "retry.base_delay"),
        (main, "retry.max_delay"),
        (main, "retry.jitter"),
        (main, "retry.max_attempt"),
        (main, "workers.concurrency"),
        (main, "workers.lease_seconds"),
        (main, "media.max_file_bytes"),
        (main, "fetch.allow_private"),
        (main, "fetch.allowed_hosts"),
        (main, "channels.wa 1"),
        (main, "channels.wa2.provider"),
        (main, "routes.main.crm"),
        (main, "routes.main.direction"),
        (secrets, "admin.token"),
        (poll, "workers.poll_interval"),
        (typo, "admin_token"),
    }
    fixes = {p.key: p.fix for p in problems}
    assert "port" in fixes["prot"]
    assert "[store] url" in fixes["store_url"]
    assert "[retry] max_attempts" in fixes["retry.max_attempt"]
    assert "GATEWAY_ADMIN__TOKEN" in fixes["admin_token"]
    assert all(p.message and p.fix for p in problems)
    # A value under a secret-looking key is never echoed back, even when it is wrong.
    assert "must be a string, got a list" in str(ConfigError(problems))
    assert "'not'" not in str(ConfigError(problems))
    rendered = str(ConfigError(problems))
    assert f"{main}: port: must be a whole number" in rendered


def test_secrets_file_and_environment_layer_over_the_settings_file(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", GOOD)
    secrets = write(
        tmp_path / ".secrets.toml",
        '[admin]\ntoken = "admin-secret"\n[channels.wa1]\ntoken = "from-secrets"\n'
        '[crms.b24]\nclient_secret = "crm-secret"\n',
    )
    env = {"GATEWAY_PORT": "9000", "GATEWAY_CHANNELS__WA1__TOKEN": "from-env"}
    settings = load_settings(main, environ=env)
    assert settings.files == (main, secrets)
    assert settings.port == 9000
    assert settings.admin_token == "admin-secret"
    wa1 = settings.channels["wa1"]
    assert wa1.options == {"base_url": "https://api.example.com", "token": "from-env"}
    assert settings.crms["b24"].options["client_secret"] == "crm-secret"
    assert settings.routes[0].target == "1" and settings.routes[0].direction == "both"
    assert (
        settings.origin("channels.wa1.token") == "environment variable GATEWAY_CHANNELS__WA1__TOKEN"
    )
    assert settings.origin("crms.b24.client_secret") == secrets
    assert settings.origin("channels.wa1.base_url") == main
    assert settings.webhook_url("wa1") == "https://gw.example.com/webhooks/wa1"


def test_variables_that_are_not_settings_are_ignored(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", 'public_url = "http://gw.test"\n')
    env = {"GATEWAY_PLUGINS": "a,b", "GATEWAY_PLUGINS_STRICT": "1", "GATEWAY_TEST_X": "y"}
    assert load_settings(main, environ={**env, "OTHER": "1"}).public_url == "http://gw.test"


def test_variable_values_keep_their_text_when_a_number_would_change_them(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", GOOD + '[admin]\ntoken = "from-file"\n')
    env = {
        "GATEWAY_CHANNELS__WA1__TOKEN": "1e5",
        "GATEWAY_CHANNELS__WA1__ACCOUNT": "0012",
        "GATEWAY_CHANNELS__WA1__TIMEOUT": "15",
        "GATEWAY_FETCH__ALLOWED_HOSTS": "a.example, *.b.example",
        "GATEWAY_FETCH__ALLOW_PRIVATE": "true",
        "GATEWAY_WORKERS__POLL_INTERVAL": "0.5",
        "GATEWAY_ADMIN__TOKEN": "",  # empty: unset, even over a file value
    }
    settings = load_settings(main, environ=env)
    options = settings.channels["wa1"].options
    assert options["token"] == "1e5" and options["account"] == "0012" and options["timeout"] == 15
    assert settings.fetch == FetchSettings(
        allow_private=True, allowed_hosts=("a.example", "*.b.example")
    )
    assert settings.workers.poll_interval == 0.5
    assert settings.admin_token is None
    numeric = load_settings(main, environ={"GATEWAY_ADMIN__TOKEN": "123456789"})
    assert numeric.admin_token == "123456789"


def test_names_are_case_insensitive_and_two_spellings_are_a_problem(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", GOOD.replace("[channels.wa1]", "[channels.WA1]"))
    settings = load_settings(main, environ={"GATEWAY_CHANNELS__WA1__TOKEN": "t0ken"})
    assert settings.channels["wa1"].options["token"] == "t0ken"
    twice = write(tmp_path / "twice.toml", GOOD + '[channels.Wa1]\nprovider = "fakechat"\n')
    assert pairs(problems_of(twice)) == {(twice, "channels.wa1")}


def test_overrides_win_and_are_blamed_on_the_command_line(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", GOOD)
    settings = load_settings(main, overrides={"host": "0.0.0.0", "port": 9001}, environ={})
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)
    assert pairs(problems_of(main, overrides={"port": 0})) == {("command line", "port")}


def test_missing_settings_file_names_the_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    (problem,) = problems_of(path)
    assert (problem.file, problem.key, problem.message) == (path, "(file)", "does not exist")


def test_toml_syntax_errors_name_each_file(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", 'public_url = "http://x"\nport = \n')
    secrets = write(tmp_path / ".secrets.toml", "[admin\n")
    problems = problems_of(main)
    assert pairs(problems) == {(main, "(file)"), (secrets, "(file)")}
    assert all("line" in p.message for p in problems)


def test_default_path_is_settings_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "settings.toml", 'public_url = "http://gw.test"\n')
    assert load_settings(environ={}).files == ("settings.toml",)
    (tmp_path / "settings.toml").unlink()
    # Without a file, variables alone can configure the gateway...
    assert load_settings(environ={"GATEWAY_PUBLIC_URL": "http://env.test"}).files == ()
    # ...and with neither, the missing file is named as missing (not "public_url: is
    # missing"), by its full path, since the working directory is where it was looked for.
    [problem] = problems_of(None)
    assert (problem.file, problem.key) == (str(tmp_path / "settings.toml"), "(file)")
    assert problem.message == "does not exist"
    assert "config/settings.example.toml" in problem.fix and "--settings" in problem.fix
    # A file that exists but lacks the key is still about the key.
    write(tmp_path / "settings.toml", "port = 8080\n")
    assert pairs(problems_of(None)) == {("settings.toml", "public_url")}


def test_local_file_beside_settings_overrides_it(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.toml", 'public_url = "http://gw.test"\nport = 1000\n')
    local = write(tmp_path / "settings.local.toml", "port = 2000\n")
    settings = load_settings(main, environ={})
    assert settings.port == 2000 and settings.files == (main, local)
    assert settings.origin("port") == local


def test_settings_from_mapping_is_typed_and_frozen(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {
            "public_url": "http://gateway.test",
            "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
            "retry": {"base_delay": 0, "max_delay": 1, "jitter": 0},
            "routes": {"r": {"channel": "wa", "crm": "crm", "direction": "Inbound"}},
        }
    )
    assert isinstance(settings, GatewaySettings)
    assert settings.retry == RetrySettings(
        max_attempts=10, base_delay=0.0, max_delay=1.0, jitter=0.0
    )
    assert isinstance(settings.retry.base_delay, float)
    assert settings.routes[0].direction == "inbound"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"public_url": "gateway.test", "port": True})
    assert pairs(caught.value.problems) == {("settings", "public_url"), ("settings", "port")}


def test_validate_instances_reports_providers_kinds_and_routes(
    providers: dict[str, type[Provider]],
) -> None:
    settings = settings_from_mapping(
        {
            "public_url": "http://gw.test",
            "channels": {
                "wa1": {"provider": "fakechat", "base_url": "http://x", "tokne": "t"},
                "wa2": {"provider": "fakechta"},
                "wa3": {"provider": "fakecrm"},
                "dup": {"provider": "fakechat", "base_url": "http://x", "token": "t"},
            },
            "crms": {
                "b24": {"provider": "fakecrm", "client_id": "a", "client_secret": "s"},
                "dup": {"provider": "fakecrm", "client_id": "a", "client_secret": "s"},
            },
            "routes": {
                "bad": {"channel": "b24", "crm": "nope"},
                "good": {"channel": "wa1", "crm": "b24"},
            },
        }
    )
    problems = validate_instances(settings, providers)
    by_key = {p.key: p for p in problems}
    assert set(by_key) == {
        "crms.dup",
        "channels.wa1.token",
        "channels.wa1.tokne",
        "channels.wa2.provider",
        "channels.wa3.provider",
        "routes.bad.channel",
        "routes.bad.crm",
    }
    assert "GATEWAY_CHANNELS__WA1__TOKEN" in by_key["channels.wa1.token"].fix
    assert "token" in by_key["channels.wa1.tokne"].fix
    assert "'fakechat'" in by_key["channels.wa2.provider"].fix
    assert "crm provider" in by_key["channels.wa3.provider"].message
    assert "[crms.wa3]" in by_key["channels.wa3.provider"].fix
    assert "not a channel" in by_key["routes.bad.channel"].message
    assert "b24" in by_key["routes.bad.crm"].fix and "dup" in by_key["routes.bad.crm"].fix


def test_instance_problems_name_the_file_of_the_key(
    tmp_path: Path, providers: dict[str, type[Provider]]
) -> None:
    main = write(tmp_path / "settings.toml", GOOD)
    secrets = write(tmp_path / ".secrets.toml", '[crms.b24]\nclient_secret = ""\n')
    settings = load_settings(main, environ={})
    problems = validate_instances(settings, providers)
    # A secret that is missing belongs in .secrets.toml (or its variable), not settings.toml.
    unset = f"{tmp_path / '.secrets.toml'} (or GATEWAY_CHANNELS__WA1__TOKEN)"
    assert pairs(problems) == {(unset, "channels.wa1.token"), (secrets, "crms.b24.client_secret")}


def test_secret_values_cover_declared_guessed_nested_and_store_passwords(
    providers: dict[str, type[Provider]],
) -> None:
    settings = settings_from_mapping(
        {
            "public_url": "http://gw.test",
            "store": {"url": "postgresql://gw:pg%40pass@db/gw"},
            "admin": {"token": "admin-secret"},
            "channels": {
                "wa1": {"provider": "fakechat", "base_url": "http://x", "token": "wa-token"},
                "other": {
                    "provider": "unknown",
                    "api_key": "guessed-key",
                    "auth": {"user": "u", "password": "nested-pass"},
                    "enabled": True,
                },
            },
        }
    )
    assert secret_values(settings, providers) == {
        "admin-secret",
        "pg%40pass",
        "pg@pass",
        "wa-token",
        "guessed-key",
        "nested-pass",
    }


def test_ca_file_must_hold_certificates(tmp_path: Path) -> None:
    from gateway_fakes.tls import make_certificates

    bad = write(tmp_path / "bad.pem", "not a certificate\n")
    main = write(tmp_path / "settings.toml", f'public_url = "http://x.test"\nca_file = "{bad}"\n')
    assert pairs(problems_of(main)) == {(main, "ca_file")}
    good = make_certificates(tmp_path / "tls").ca
    write(tmp_path / "settings.toml", f'public_url = "http://x.test"\nca_file = "{good}"\n')
    assert load_settings(main, environ={}).ca_file == str(good)


def test_plugin_tables_are_kept_for_their_plugin(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.toml",
        GOOD + '[plugins.Spam_Filter]\nwords = ["buy now"]\nHeader = "X-Spam"\n',
    )
    settings = load_settings(path, environ={"GATEWAY_PLUGINS__AUDIT__URL": "https://a.example"})
    assert settings.plugins == {
        "spam_filter": {"words": ["buy now"], "header": "X-Spam"},
        "audit": {"url": "https://a.example"},
    }
    broken = write(tmp_path / "broken.toml", GOOD + "[plugins]\naudit = 1\n")
    assert pairs(problems_of(broken)) == {(broken, "plugins.audit")}
