"""The `gateway` command: run the gateway, check settings, list plugins, handle dead letters.

Exit codes: 0 done; 1 the command ran and failed (the store refused, a plugin failed to
load); 2 bad arguments or settings that cannot run, in which case nothing was started.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import uvicorn

from gateway.cli_store import cmd_dead_letters, cmd_replay, open_store, using_store
from gateway.errors import ConfigError, ConfigProblem, PluginError, StoreError
from gateway.hookcall import call_each
from gateway.logs import Redactor, configure_logging
from gateway.plugins import PluginHost
from gateway.providers import Route
from gateway.settings import (
    GatewaySettings,
    check_settings,
    public_url_problems,
    secret_values,
    validate_instances,
)
from gateway.store.base import Store

log = logging.getLogger("gateway.cli")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_T = TypeVar("_T")
_ARROWS = {"both": "<->", "inbound": "->", "outbound": "<-"}
_STORE_HINT = (
    "while the gateway runs it holds a SQLite store: use its admin API instead "
    "(GET /admin/dead-letters, POST /admin/replay)"
)


def load_plugins() -> PluginHost:
    """Every installed plugin with its providers; tests replace this to add their own."""
    host = PluginHost()
    host.load_entry_points()
    host.collect_providers()
    return host


def _setup_instructions(settings: GatewaySettings, host: PluginHost) -> dict[str, list[str]]:
    """What providers need done by hand, per instance (Meta's dashboard has no API for
    webhooks, a Bitrix24 app card is made by hand); masked by the caller when printed."""
    gateway_class = importlib.import_module("gateway.runtime").Gateway
    gateway = gateway_class(settings, host)
    return {name: p.setup_instructions() for name, p in gateway.instances.items()}


def _store_exists(url: str) -> bool:
    """Whether `gateway check` may open the store: a SQLite file is never created by it."""
    path = url.partition("://")[2][1:] if url.startswith("sqlite:") else None
    return path is None or (path != ":memory:" and os.path.isfile(path))


async def _warnings(settings: GatewaySettings, host: PluginHost, stored: bool) -> list[str]:
    """Each provider's `check_warnings`, with the store open when it already exists (what
    is installed counts too); a store that cannot be read leaves the settings alone."""
    store: Store | None = None
    url = settings.store_url
    if stored:
        candidate = open_store(url)
        try:
            async with asyncio.timeout(10.0):
                await candidate.open()
            store = candidate
        except Exception as exc:  # check still reports the settings
            log.debug("store not read by check: %s", exc)
    gateway = importlib.import_module("gateway.runtime").Gateway(settings, host, store=store)
    try:
        found = []
        for provider in gateway.instances.values():
            found += await provider.check_warnings(stored=store is not None)
        return found
    finally:
        if store is not None:
            await store.close()


def _validated(
    path: str | None, overrides: dict[str, Any] | None = None
) -> tuple[GatewaySettings, PluginHost, list[ConfigProblem]]:
    """Settings, plugins and every problem of both, so one run shows all of them."""
    settings, problems = check_settings(path, overrides=overrides)
    host = load_plugins()
    problems += validate_instances(settings, host.providers)
    problems += public_url_problems(settings, host.providers)
    try:
        open_store(settings.store_url)  # checks the URL; connects only on open()
    except StoreError as exc:
        fix = "use sqlite:///relative.db, sqlite:////absolute.db or postgresql://..."
        problems.append(ConfigProblem("store.url", str(exc), fix, settings.origin("store.url")))
    return settings, host, problems


def _refuse(problems: Sequence[ConfigProblem], what: str, secrets: Iterable[str] = ()) -> int:
    redactor = Redactor(secrets)
    for p in problems:
        # File and key stay as they are: ".secrets.toml: x" looks like "secret: value".
        message, fix = redactor.redact(p.message), redactor.redact(p.fix)
        print(ConfigProblem(p.key, message, fix, p.file), file=sys.stderr)
    print(f"gateway: {len(problems)} settings problem(s); {what}", file=sys.stderr)
    return EXIT_USAGE


MAX_LOGGED_HINTS = 3


def _hints(settings: GatewaySettings, host: PluginHost) -> list[str]:
    """Secrets written into the main settings file, which tends to end up in git."""
    main = settings.sources.get("")
    keys = ["admin.token"] if settings.admin_token else []
    for inst in settings.instances.values():
        cls = host.providers.get(inst.provider)
        secret = cls.secret_settings if cls else frozenset()
        keys += [f"{inst.kind}s.{inst.name}.{k}" for k in sorted(secret & inst.options.keys())]
    return [
        # No "secret:" here: the log redactor would mask the word after it.
        f"{main}: {key} is a secret; move it to .secrets.toml or "
        f"GATEWAY_{key.upper().replace('.', '__')}"
        for key in keys
        if settings.origin(key) == main
    ]


def cmd_run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings, host, problems = _validated(args.settings, overrides)
    if problems:
        return _refuse(problems, "nothing was started", secret_values(settings, host.providers))
    configure_logging(
        settings.log_level, settings.log_format, secret_values(settings, host.providers)
    )
    supervisor = importlib.import_module("gateway.supervisor")
    if args.role is not None:  # a child of the supervisor, which logged the hints
        return int(supervisor.run_child(args, settings, host, _server_options(settings)))
    hints = _hints(settings, host)
    for hint in hints[:MAX_LOGGED_HINTS]:
        log.warning(hint)
    if len(hints) > MAX_LOGGED_HINTS:
        # A thousand channels with inline tokens would be a thousand lines at every start.
        log.warning(
            "%d more secrets are written in %s; `gateway check` lists them",
            len(hints) - MAX_LOGGED_HINTS,
            settings.sources.get(""),
        )
    if not settings.admin_token:
        log.info("admin API off: set [admin] token in .secrets.toml or GATEWAY_ADMIN__TOKEN")
    split, problems = supervisor.wanted(settings)
    if problems:
        return _refuse(problems, "nothing was started", secret_values(settings, host.providers))
    if args.workers > 1 and not settings.store_url.lower().startswith(("postgres",)):
        return _refuse_workers(args, settings)
    if split:
        options = _server_options(settings)
        return int(supervisor.Supervisor(args, settings, host, options).run())
    if args.workers > 1:
        return _run_workers(args, settings)
    runtime = importlib.import_module("gateway.runtime")
    app = importlib.import_module("gateway.app").create_app(runtime.Gateway(settings, host))
    config = uvicorn.Config(app, **_server_options(settings))
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn's way out when it cannot bind the port
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    return EXIT_OK if server.started else EXIT_FAILED


def _server_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn's options, the same for one process and for `--workers N`."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "lifespan": "on",
        "access_log": settings.access_log,
        "loop": _loop(),
        "http": _http_parser(),
    }


def _loop() -> Literal["uvloop", "asyncio"]:
    """uvloop when importable (uvicorn[standard]): a faster event loop than asyncio's."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _http_parser() -> Literal["httptools", "h11"]:
    """httptools when importable: a C parser, several times faster than h11."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def _refuse_workers(args: argparse.Namespace, settings: GatewaySettings) -> int:
    # Refused before binding: N HTTP processes on one SQLite file would each act on their
    # own copy of routes and installs (one HTTP and one delivery process are supported).
    print(
        f"gateway: {settings.origin('store.url')}: [store] url = {settings.store_url!r}:"
        f" --workers {args.workers} needs a store every process shares, and a SQLite"
        " store serves one HTTP process (and its delivery process). Fix: set [store] url ="
        ' "postgresql://user@host/db" (see docs/deploy.md), or run without --workers',
        file=sys.stderr,
    )
    return EXIT_USAGE


def _run_workers(args: argparse.Namespace, settings: GatewaySettings) -> int:
    """`--workers N`: uvicorn's supervisor forks N processes, each with its own gateway."""
    app_module = importlib.import_module("gateway.app")
    os.environ[app_module.SETTINGS_FILE_ENV] = os.path.abspath(args.settings or "settings.toml")
    # Workers read the settings themselves; the command line's host and port bind here.
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        workers=args.workers,
        **_server_options(settings),
    )
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    settings, host, problems = _validated(args.settings)
    if problems:
        secrets = secret_values(settings, host.providers)
        return _refuse(problems, "the gateway would not start", secrets)
    redactor = Redactor(secret_values(settings, host.providers))
    variables = {v for v in settings.sources.values() if v.startswith("environment variable")}
    files = ", ".join(settings.files) or "none (defaults)"
    more = f" + {len(variables)} environment variables" if variables else ""
    print(f"settings: {files}{more}")
    print(f"public URL: {settings.public_url}")
    if settings.allow_local_public_url:
        print("  (allow_local_public_url = true: services on the internet may not reach it)")
    print(f"listens on: {settings.host}:{settings.port}")
    print(f"store: {redactor.redact(settings.store_url)}")
    admin = "on" if settings.admin_token else "off (set [admin] token to use /admin)"
    print(f"admin API: {admin}")
    show = str if getattr(args, "show_secrets", False) else redactor.redact
    steps = _setup_instructions(settings, host)
    for title, table in (("channels", settings.channels), ("crms", settings.crms)):
        print(f"{title}: {len(table)}")
        for name, inst in table.items():
            # Providers with setup steps name their own URLs there (Bitrix24 has no single
            # webhook: it calls the install and handler paths).
            where = "see setup below" if steps.get(name) else settings.webhook_url(name)
            print(f"  {name}  provider={inst.provider}  webhook={where}")
    for name, lines in steps.items():
        if lines:
            print(f"setup for {name} (paste these):")
            for step in lines:
                print(f"  {show(step)}")
    print(f"routes: {len(settings.routes)}")
    for route in settings.routes:
        target = f"  target={route.target}" if route.target else ""
        arrow = _ARROWS[route.direction]
        print(f"  {route.name}  {route.channel} {arrow} {route.crm}  ({route.direction}){target}")
    loaded = [r.name for r in host.reports if r.loaded]
    print(f"plugins: {', '.join(loaded) or 'none'}")
    for report in host.reports:
        if not report.loaded:
            print(f"  failed: {report.error}")
    for hint in _hints(settings, host):
        print(f"note: {hint}")
    stored = _store_exists(settings.store_url)
    for warning in asyncio.run(_warnings(settings, host, stored)):
        print(f"warning: {warning}")
    print("OK: the gateway can start with these settings")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    host = load_plugins()
    rows = []
    for report in host.reports:
        classes = [host.providers[p] for p in report.providers if p in host.providers]
        providers = [
            {"name": c.name, "kind": c.kind, "description": c.description} for c in classes
        ]
        rows.append({**dataclasses.asdict(report), "providers": providers})
        if not args.json:
            print(f"{report.name} ({report.module}): {'loaded' if report.loaded else 'FAILED'}")
            for cls in classes:
                print(f"  {cls.kind:<7} {cls.name}  {cls.description}".rstrip())
            if report.error:
                print(f"  error: {report.error}")
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no plugins found (entry-point group gateway.plugins)")
    return EXIT_OK if all(r.loaded for r in host.reports) else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    """What needs a person; exit 1 when something does (for monitoring), 0 otherwise."""
    from gateway.status import gather, render

    settings, host, problems = _validated(args.settings)
    if problems:
        return _refuse(problems, "the status cannot be read", secret_values(settings, {}))
    providers = host.providers or host.collect_providers()

    async def read(store: Store) -> Any:
        routes = [Route(r.name, r.channel, r.crm, r.target, r.direction) for r in settings.routes]
        names = {r.name for r in routes}
        for stored in await store.load_routes():
            if stored.name not in names:
                direction: Any = stored.direction
                routes.append(
                    Route(stored.name, stored.channel, stored.crm, stored.target, direction)
                )
        return await gather(settings, store, providers, routes, time.time())

    report = asyncio.run(using_store(settings.store_url, read))
    redactor = Redactor(secret_values(settings, providers))
    if args.json:
        print(json.dumps(redactor.scrub(report.to_json()), indent=2))
    else:
        print(redactor.redact(render(report)))
    return EXIT_FAILED if report.needs_attention else EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def _instant(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or time such as 2025-01-31 or 2025-01-31T12:00+03:00, "
            f"got {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from gateway.scaffold import write_skeleton

    try:
        root = write_skeleton(args.name, Path(args.directory))
    except ValueError as exc:
        print(f"gateway new-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {root}: `cd {root} && python -m pytest` runs its tests")
    return 0


def build_parser(*, plugin_commands: bool = True) -> argparse.ArgumentParser:
    try:
        version = importlib.metadata.version("whatschat-gateway")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    parser = argparse.ArgumentParser(
        prog="gateway", description="WhatsChat Gateway: WhatsApp <-> Bitrix24 Open Lines."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    settings_help = "settings file (default ./settings.toml; .secrets.toml is read beside it)"

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    def with_settings(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--settings", metavar="PATH", help=settings_help)

    run = command("run", cmd_run, "serve the gateway until stopped (SIGTERM/SIGINT)")
    with_settings(run)
    run.add_argument("--host", help="listen address (overrides host)")
    run.add_argument("--port", type=int, help="listen port (overrides port)")
    run.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="HTTP processes on this port (default 1; more need a postgresql:// store)",
    )
    # Set by the supervisor for its children (`gateway.supervisor`), not by people.
    run.add_argument("--role", choices=("http", "delivery"), help=argparse.SUPPRESS)
    run.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    run.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    check = command("check", cmd_check, "check settings and plugins; print a summary")
    with_settings(check)
    check.add_argument(
        "--show-secrets",
        action="store_true",
        help="print secrets the setup steps need (e.g. the Cloud API verify token) unmasked",
    )
    plugins = command("plugins", cmd_plugins, "list plugins, their providers, load errors")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    dead = command("dead-letters", cmd_dead_letters, "list parked jobs, oldest first")
    with_settings(dead)
    dead.add_argument("--destination", metavar="INSTANCE", help="only jobs for this instance")
    dead.add_argument("--lane", help="only jobs of this lane (one conversation)")
    dead.add_argument("--limit", type=_positive, default=100, help="at most N (default 100)")
    dead.add_argument("--json", action="store_true", help="print JSON")
    dead.add_argument("--wide", action="store_true", help="every field whole, reasons uncut")
    status = command(
        "status",
        cmd_status,
        "what needs a person: unrouted messages, parked jobs, instances not connected, "
        "portals not installed (exit 1 if anything)",
    )
    with_settings(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    replay = command("replay", cmd_replay, "make dead letters ready again")
    with_settings(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", type=_positive, nargs="+", metavar="ID", help="these jobs")
    which.add_argument("--lane", help="every dead job of this lane")
    which.add_argument("--since", type=_instant, metavar="ISO", help="dead since (UTC if naive)")
    replay.add_argument("--until", type=_instant, metavar="ISO", help="...and until (with --since)")
    replay.add_argument("--json", action="store_true", help="print JSON")
    new = command("new-plugin", cmd_new_plugin, "write a skeleton plugin distribution")
    new.add_argument("name", help="plugin name: lower-case letters, digits and _")
    new.add_argument("--directory", default=".", help="where to write NAME/ (default .)")
    if plugin_commands:
        _add_plugin_commands(command)
    return parser


BUILT_IN_COMMANDS = frozenset({"run", "check", "plugins", "dead-letters", "replay", "new-plugin"})


def _add_plugin_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Let every plugin add its sub-commands (`cli_commands`); a failing one is only logged."""
    host = PluginHost()
    host.load_entry_points(strict=False)
    call_each(host.hook.cli_commands, command=command)


def _needs_plugin_commands(argv: Sequence[str]) -> bool:
    """False when argv names a built-in command: its run loads plugins itself, once."""
    words = [a for a in argv if not a.startswith("-")]
    return not words or words[0] not in BUILT_IN_COMMANDS


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(plugin_commands=_needs_plugin_commands(words))
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command; `gateway COMMAND --help` tells more")
        if args.command == "replay" and args.until is not None:
            if args.since is None:
                args.parser.error("--until needs --since")
            if args.until < args.since:
                args.parser.error("--until is before --since")
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        return _refuse(exc.problems, "nothing was done")
    except PluginError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        hint = f"\n  {_STORE_HINT}" if args.command in ("dead-letters", "replay") else ""
        print(f"gateway: store: {Redactor().redact(str(exc))}{hint}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
