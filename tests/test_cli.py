"""The `gateway` command through `main([...])`: no process, no port, no network."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway import cli, logs
from gateway.errors import StoreError
from gateway.hookspecs import hookimpl
from gateway.plugins import PluginHost
from gateway.providers import ChannelProvider, CRMProvider, Provider
from gateway.store.base import Job

PROBLEM_LINE = re.compile(r"^\S.*: \S+: .+ \(fix: .+\)$")
ADMIN = "admin-secret-1234"


class FakeChannel(ChannelProvider):
    name = "fakechat"
    description = "a channel for tests"
    required_settings: ClassVar[dict[str, str]] = {"base_url": "the API URL", "token": "the token"}
    secret_settings = frozenset({"token"})

    @classmethod
    def validate_settings(cls, config: Any) -> list[tuple[str, str, str]]:
        problems = super().validate_settings(config)
        if str(config.get("token", "")).startswith("rejected"):
            problems.append(("token", f"{config['token']} was refused", "get a new one"))
        return problems


class FakeCRM(CRMProvider):
    name = "fakecrm"
    required_settings: ClassVar[dict[str, str]] = {"client_id": "the app id"}


class FakePlugin:
    @hookimpl
    def register_providers(self, register: Callable[[type[Provider]], None]) -> None:
        register(FakeChannel)
        register(FakeCRM)


class BrokenPlugin:
    @hookimpl
    def no_such_hook(self) -> None:
        """A misspelled hook: the host refuses the plugin and reports it."""


def fake_host(broken: bool = False) -> PluginHost:
    host = PluginHost()
    host.add(FakePlugin(), name="test")
    if broken:
        host.add(BrokenPlugin(), name="broken", strict=False)
    host.collect_providers()
    return host


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No GATEWAY_* variable of the caller leaks in; plugins are the fake ones; logging restored."""

    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "load_plugins", fake_host)
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", *logs.FILTERED_LOGGERS)]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, filters, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)
    logs._installed = None


GOOD = """
public_url = "https://gw.example.com"
[channels.wa1]
provider = "fakechat"
base_url = "https://api.example.com"
[crms.b24]
provider = "fakecrm"
client_id = "app.1"
[routes.main]
channel = "wa1"
crm = "b24"
direction = "inbound"
target = "7"
"""
SECRETS = f'[admin]\ntoken = "{ADMIN}"\n[channels.wa1]\ntoken = "wa-token-5678"\n'


@pytest.fixture
def good(tmp_path: Path) -> str:
    (tmp_path / "settings.toml").write_text(GOOD)
    (tmp_path / ".secrets.toml").write_text(SECRETS)
    return str(tmp_path / "settings.toml")


@pytest.fixture
def broken(tmp_path: Path) -> str:
    path = tmp_path / "broken.toml"
    path.write_text(
        'public_url = "nowhere"\nprot = 1\n[channels.wa1]\nprovider = "fakechta"\n'
        '[routes.main]\nchannel = "wa1"\ncrm = "b24"\n'
    )
    return str(path)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to build the gateway or a server."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be started")

    monkeypatch.setattr(cli.uvicorn, "Server", refuse)
    monkeypatch.setattr(cli.uvicorn, "Config", refuse)
    monkeypatch.setitem(sys.modules, "gateway.runtime", types.SimpleNamespace(Gateway=refuse))


def test_check_prints_a_summary_with_webhook_urls(
    good: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--settings", good]) == 0
    out = capsys.readouterr().out
    assert "public URL: https://gw.example.com" in out
    assert "wa1  provider=fakechat  webhook=https://gw.example.com/webhooks/wa1" in out
    assert "b24  provider=fakecrm  webhook=https://gw.example.com/webhooks/b24" in out
    assert "main  wa1 -> b24  (inbound)  target=7" in out
    assert "admin API: on" in out and "plugins: test" in out and out.rstrip().endswith("settings")
    assert ADMIN not in out and "wa-token-5678" not in out


def test_check_lists_every_problem_one_per_line(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--settings", broken]) == 2
    captured = capsys.readouterr()
    *lines, summary = captured.err.strip().splitlines()
    assert all(PROBLEM_LINE.match(line) for line in lines), lines
    keys = {line.split(": ")[1] for line in lines}
    assert keys == {"public_url", "prot", "channels.wa1.provider", "routes.main.crm"}
    assert all(line.startswith(f"{broken}: ") for line in lines)
    assert summary == "gateway: 4 settings problem(s); the gateway would not start"
    assert captured.out == ""


def test_check_notes_secrets_written_in_the_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(GOOD.replace('base_url = "', 'token = "inline-token-9"\nbase_url = "'))
    assert cli.main(["check", "--settings", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and "channels.wa1.token is a secret" in out
    assert "GATEWAY_CHANNELS__WA1__TOKEN" in out and "inline-token-9" not in out


def test_check_reports_a_store_url_no_backend_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('public_url = "http://gw.test"\n[store]\nurl = "mysql://db/gw"\n')
    assert cli.main(["check", "--settings", str(path)]) == 2
    assert f"{path}: store.url: " in capsys.readouterr().err


def test_problems_never_print_secret_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "settings.toml").write_text(GOOD)
    (tmp_path / ".secrets.toml").write_text('[channels.wa1]\ntoken = "rejected-token-77"\n')
    assert cli.main(["check", "--settings", str(tmp_path / "settings.toml")]) == 2
    err = capsys.readouterr().err
    assert "channels.wa1.token: *** was refused" in err and "rejected-token-77" not in err


@pytest.mark.usefixtures("no_server")
def test_run_refuses_broken_settings_before_binding(
    broken: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--settings", broken]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: public_url: " in err and err.strip().endswith("nothing was started")


@pytest.mark.usefixtures("no_server")
def test_run_refuses_a_missing_file_and_a_bad_port(
    good: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.toml")
    assert cli.main(["run", "--settings", missing]) == 2
    assert f"{missing}: (file): does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--settings", good, "--port", "70000"]) == 2
    assert "command line: port: must be a port number" in capsys.readouterr().err


@pytest.mark.parametrize("access_log", [None, "true"])
def test_run_serves_the_app_with_uvicorn(
    good: str,
    access_log: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if access_log is not None:
        monkeypatch.setenv("GATEWAY_ACCESS_LOG", access_log)
    # One process: the server stands in for uvicorn's here (the supervisor would start
    # real children; tests/test_delivery_process.py runs those).
    monkeypatch.setenv("GATEWAY_WORKERS__DELIVERY_PROCESS", "false")
    built: dict[str, Any] = {}

    class Gateway:
        def __init__(self, settings: Any, host: PluginHost) -> None:
            built["settings"], built["host"] = settings, host

    class Server:
        def __init__(self, config: Any) -> None:
            built["config"] = config
            self.started = False

        def run(self) -> None:
            logging.getLogger("uvicorn.access").info(
                '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/x?token={ADMIN}", "1.1", 200
            )
            self.started = True

    runtime = types.SimpleNamespace(Gateway=Gateway)
    app = types.SimpleNamespace(create_app=lambda gateway: ("app", gateway))
    monkeypatch.setitem(sys.modules, "gateway.runtime", runtime)
    monkeypatch.setitem(sys.modules, "gateway.app", app)
    monkeypatch.setattr(cli.uvicorn, "Server", Server)
    assert cli.main(["run", "--settings", good, "--host", "0.0.0.0", "--port", "9999"]) == 0
    config = built["config"]
    assert (config.host, config.port, config.lifespan, config.log_config) == (
        "0.0.0.0",
        9999,
        "on",
        None,
    )
    assert config.app[0] == "app" and isinstance(config.app[1], Gateway)
    # The access log costs more than a webhook at load: off unless asked for.
    assert config.access_log is (access_log == "true")
    assert (config.loop, config.http) == ("uvloop", "httptools")
    assert built["settings"].port == 9999 and "fakechat" in built["host"].providers
    err = capsys.readouterr().err
    assert ADMIN not in err
    assert ("/x?token=***" in err) is (access_log == "true")


def test_gateway_run_by_default_in_memory_is_one_uvicorn_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('public_url = "http://gw.test"\n[store]\nurl = "sqlite://:memory:"\n')
    served: list[object] = []

    class Server:
        def __init__(self, config: Any) -> None:
            self.started = True

        def run(self) -> None:
            served.append(self)

    def no_supervisor(*args: Any) -> None:
        raise AssertionError("a store in memory cannot be shared: no supervisor")

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr("gateway.supervisor.Supervisor", no_supervisor)
    monkeypatch.setitem(sys.modules, "gateway.app", types.SimpleNamespace(create_app=repr))
    monkeypatch.setattr(cli.uvicorn, "Server", Server)
    assert cli.main(["run", "--settings", str(path)]) == 0
    assert len(served) == 1


def test_run_logs_a_few_inline_secrets_then_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    channels = "".join(
        f'[channels.wa{n}]\nprovider = "fakechat"\nbase_url = "https://api.example.com"\n'
        f'token = "inline-token-{n}"\n'
        for n in range(2, 7)
    )
    path = tmp_path / "settings.toml"
    path.write_text(GOOD.replace("[crms.b24]", channels + "[crms.b24]"))
    (tmp_path / ".secrets.toml").write_text(SECRETS)
    monkeypatch.setenv("GATEWAY_WORKERS__DELIVERY_PROCESS", "false")  # one process, as above

    class Server:
        def __init__(self, config: Any) -> None:
            self.started = True

        def run(self) -> None:
            pass

    runtime = types.SimpleNamespace(Gateway=lambda settings, host: None)
    app = types.SimpleNamespace(create_app=lambda gateway: "app")
    monkeypatch.setitem(sys.modules, "gateway.runtime", runtime)
    monkeypatch.setitem(sys.modules, "gateway.app", app)
    monkeypatch.setattr(cli.uvicorn, "Server", Server)
    assert cli.main(["run", "--settings", str(path)]) == 0
    err = capsys.readouterr().err
    named = re.findall(r"channels\.wa\d\.token is a secret; move it to \.secrets\.toml", err)
    assert len(named) == cli.MAX_LOGGED_HINTS
    assert f"2 more secrets are written in {path}" in err
    assert "inline-token" not in err


def test_plugins_lists_providers_and_load_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "test (FakePlugin): loaded" in out and "channel fakechat  a channel for tests" in out
    monkeypatch.setattr(cli, "load_plugins", lambda: fake_host(broken=True))
    assert cli.main(["plugins", "--json"]) == 1
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["test"]["loaded"] and {p["name"] for p in rows["test"]["providers"]} == {
        "fakechat",
        "fakecrm",
    }
    assert not rows["broken"]["loaded"] and "no_such_hook" in rows["broken"]["error"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["run", "--port", "abc"],
        ["check", "--bogus"],
        ["replay"],
        ["replay", "--job", "0"],
        ["replay", "--job", "1", "--lane", "x"],
        ["replay", "--until", "2025-01-01", "--job", "1"],
        ["replay", "--since", "yesterday"],
        ["replay", "--since", "2025-02-01", "--until", "2025-01-01"],
        ["dead-letters", "--limit", "-1"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


class FakeStore:
    def __init__(self, jobs: Sequence[Job], fail: str | None = None) -> None:
        self.jobs = list(jobs)
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    async def open(self) -> None:
        if self.fail:
            raise StoreError(self.fail)

    async def close(self) -> None:
        self.closed = True

    async def dead_letters(self, **kwargs: Any) -> list[Job]:
        self.calls.append(("dead_letters", kwargs))
        return self.jobs

    async def replay_jobs(self, **kwargs: Any) -> list[tuple[int, int]]:
        self.calls.append(("replay", kwargs))
        return [(5, 7), (6, 8)]


def dead_job(job_id: int, error: str) -> Job:
    return Job(
        id=job_id, kind="send", route="main", source="wa1", destination="b24",
        lane="b24:main:c1", payload={"text": "hi"}, state="dead", attempts=10,
        created_at=1_700_000_000.0, available_at=1_700_000_000.0, last_error=error,
        dead_at=1_700_000_060.0,
    )  # fmt: skip


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore([dead_job(5, f"PermanentError: refused, token={ADMIN} in {ADMIN}")])
    opened: list[str] = []

    def open_store(url: str, **_options: object) -> FakeStore:
        opened.append(url)
        return fake

    monkeypatch.setitem(sys.modules, "gateway.store", types.SimpleNamespace(open_store=open_store))
    return fake


def test_dead_letters_prints_a_table_or_json_without_secrets(
    good: str, store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dead-letters", "--settings", good, "--destination", "b24", "--limit", "5"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    header, row, footer = out.strip().splitlines()
    assert header.split()[:3] == ["ID", "DEAD", "SINCE"]
    assert row.split()[:4] == ["5", "2023-11-14", "22:14:20", "10"]
    assert footer.startswith("1 dead letter(s)")
    assert "b24:main:c1" in row and ADMIN not in out and "***" in row
    assert store.calls == [("dead_letters", {"limit": 5, "destination": "b24", "lane": None})]
    assert store.closed
    assert cli.main(["dead-letters", "--settings", good, "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["id"] == 5 and job["payload"] == {"text": "hi"} and ADMIN not in job["last_error"]


def test_long_reasons_are_cut_in_the_table_and_whole_with_wide(
    good: str, store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "PermanentError: " + "the portal refused the message because " * 5 + "END"
    store.jobs[:] = [dead_job(5, reason)]
    assert cli.main(["dead-letters", "--settings", good]) == 0
    out = capsys.readouterr().out
    assert "END" not in out and "…" in out and "--wide" in out
    assert cli.main(["dead-letters", "--settings", good, "--wide"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("job 5\n") and f"  reason:      {reason}\n" in out


def test_replay_passes_the_selection_to_the_store(
    good: str, store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["replay", "--settings", good, "--job", "5", "6"]) == 0
    out = capsys.readouterr().out
    assert "replayed job 5 as job 7\nreplayed job 6 as job 8\n" in out
    assert "replayed 2 dead letter(s)" in out
    argv = [
        "replay",
        "--settings",
        good,
        "--since",
        "2025-01-31",
        "--until",
        "2025-01-31T12:00+02:00",
    ]
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "replayed": 2,
        "jobs": [{"job": 5, "new_job": 7}, {"job": 6, "new_job": 8}],
    }
    (_, first), (_, second) = store.calls
    assert first["job_ids"] == [5, 6] and first["lane"] is None
    # A time without an offset is UTC; one with an offset keeps it.
    assert (second["since"], second["until"]) == (1738281600.0, 1738317600.0)


def test_store_errors_are_reported_without_a_traceback(
    good: str, store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.fail = "another gateway process is using the SQLite store var/gateway.db"
    assert cli.main(["dead-letters", "--settings", good]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("gateway: store: another gateway process") and "/admin/dead-letters" in err
    )
    assert "Traceback" not in err


def test_store_commands_refuse_broken_settings(
    broken: str, store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["replay", "--settings", broken, "--lane", "x"]) == 2
    assert "nothing was done" in capsys.readouterr().err and store.calls == []


def test_run_with_workers_refuses_a_sqlite_store_naming_file_key_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        'public_url = "http://gw.test"\n[store]\nurl = "sqlite:///gw.db"\n'
        f'[media]\ndirectory = "{tmp_path / "media"}"\n'
    )
    assert cli.main(["run", "--settings", str(path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "settings.toml" in err and "[store] url" in err and "postgresql://" in err


def test_status_prints_what_needs_a_person(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from gateway.store import open_store
    from gateway.store.base import IngestItem

    db = tmp_path / "gw.db"
    path = tmp_path / "settings.toml"
    path.write_text(
        f'public_url = "http://gw.test"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[media]\ndirectory = "{tmp_path / "media"}"\n'
        '[channels.wa]\nprovider = "fakechat"\nbase_url = "https://api.example.com"\ntoken = "t"\n'
    )
    assert cli.main(["status", "--settings", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Instances not connected" in out and "wa: unknown" in out

    async def hold() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        item = IngestItem("wa", "k1", {"event": {}, "target": None}, hold=True, conversation="c")
        await store.ingest([item], 1_800_000_000.0)
        await store.kv_put("accounts", "wa", {"status": "connected", "detail": None})
        await store.close()

    asyncio.run(hold())
    assert cli.main(["status", "--settings", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Unrouted messages" in out and "wa: 1 held" in out
    assert "not connected" not in out
    assert cli.main(["status", "--settings", str(path), "--json"]) == 1
    assert '"held": 1' in capsys.readouterr().out
