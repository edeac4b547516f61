"""Typed settings: `settings.toml`, then `.secrets.toml` beside it, then `GATEWAY_*` variables.

Files go through dynaconf, so its conventions hold: a `settings.local.toml` (or
`.secrets.local.toml`) beside a file overrides it, `@format`/`@int` tokens work, tables merge
across layers and lists are appended. Variables nest with `__`: `GATEWAY_CHANNELS__WA1__TOKEN`
is `channels.wa1.token`. The result is checked against `gateway.settings_model`, and every
problem names the file or variable that set the key, the dotted key and a fix.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from dynaconf import Dynaconf
from dynaconf.utils.files import get_local_filename
from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

from gateway.errors import ConfigError, ConfigProblem
from gateway.settings_check import public_url_problems, secret_values, validate_instances
from gateway.settings_model import (
    ENV_PREFIX,
    FetchSettings,
    GatewaySettings,
    InstanceSettings,
    LogFormat,
    MediaSettings,
    RetrySettings,
    RouteSettings,
    WorkerSettings,
    build_settings,
    plain_data,
)

__all__ = [
    "FetchSettings", "GatewaySettings", "InstanceSettings", "LogFormat", "MediaSettings",
    "RetrySettings", "RouteSettings", "WorkerSettings", "check_settings", "load_settings",
    "public_url_problems",
    "secret_values", "settings_from_mapping", "validate_instances",
]  # fmt: skip

# Variables with our prefix that are not settings: plugin selection (plugins.py), test setup.
# (`GATEWAY_PLUGINS__NAME__KEY` is a setting: `[plugins.NAME] key`.)
NOT_SETTINGS = ("PLUGINS", "PLUGINS_STRICT", "SETTINGS_FILE")
NOT_SETTINGS_PREFIX = "TEST_"
WHOLE_FILE = "(file)"
COMMAND_LINE = "command line"
_DYNACONF_KEYS = ("LOAD_DOTENV", "LOADERS_FOR_DYNACONF")  # our own arguments, echoed back


def _flatten(value: Any, label: str, sources: dict[str, str], key: str = "") -> None:
    """Record which layer set each key; a table keeps its first definer, a value its last."""
    if isinstance(value, Mapping):
        if key:
            sources.setdefault(key, label)
        for k, v in value.items():
            _flatten(v, label, sources, f"{key}.{str(k).lower()}" if key else str(k).lower())
    else:
        sources[key] = label


def _environment(
    environ: Mapping[str, str], dyn: Any, sources: dict[str, str], out: list[ConfigProblem]
) -> dict[str, Any]:
    """`GATEWAY_A__B=value` -> {"a__b": value}, parsed as dynaconf's own env loader does."""
    found: dict[str, Any] = {}
    for var, text in sorted(environ.items()):
        name = var.removeprefix(ENV_PREFIX)
        if name == var or name in ("", *NOT_SETTINGS) or name.startswith(NOT_SETTINGS_PREFIX):
            continue
        parts = name.lower().split("__")
        label = f"environment variable {var}"
        if not all(parts):
            fix = f"nest keys with two underscores, e.g. {ENV_PREFIX}CHANNELS__WA1__TOKEN"
            out.append(ConfigProblem(name.lower(), "is not a usable name", fix, label))
            continue
        value = parse_conf_data(boolean_fix(text), tomlfy=True, box_settings=dyn)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # A token such as "1e5" or "0012" must not turn into a different number.
            value = value if str(value) == text.strip() else text
        found["__".join(parts)] = value
        _flatten(value, label, sources, ".".join(parts))
    return found


def check_settings(
    path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[GatewaySettings, list[ConfigProblem]]:
    """What can be loaded, and every problem found; `load_settings` raises on any."""
    main = path or "settings.toml"
    secrets = os.path.join(os.path.dirname(main), ".secrets.toml")
    sources = {"": main}
    fallback = GatewaySettings("http://127.0.0.1:8080", sources=sources)
    if path is not None and not os.path.isfile(path):
        fix = "check the --settings path, or copy config/settings.example.toml there"
        return fallback, [ConfigProblem(WHOLE_FILE, "does not exist", fix, path)]
    given_files = [p for p in (main, secrets) if os.path.isfile(p)]
    # dynaconf's own order: the files found, then the `.local.` twin of each that exists.
    twins = [get_local_filename(p) for p in given_files]
    files = (*given_files, *(p for p in twins if os.path.isfile(p)))
    problems = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                _flatten(tomllib.load(handle), file, sources)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            fix = "fix the syntax at the line and column shown, or the file's permissions"
            problems.append(ConfigProblem(WHOLE_FILE, f"cannot be read: {exc}", fix, file))
    if problems:
        return fallback, problems
    dyn = Dynaconf(
        settings_files=[os.path.abspath(p) for p in given_files],
        environments=False,
        envvar_prefix="GATEWAY",
        load_dotenv=False,
        merge_enabled=True,
        # Variables are applied by _environment from `environ` instead: tests need not touch
        # os.environ, and each key's variable is known for the problems.
        loaders=[],
    )
    env = _environment(os.environ if environ is None else environ, dyn, sources, problems)
    given = {k.lower(): v for k, v in (overrides or {}).items()}
    for key, value in given.items():
        _flatten(value, COMMAND_LINE, sources, key)
    try:
        dyn.update(env)
        dyn.update({k.replace(".", "__"): v for k, v in given.items()})
        raw = {k: v for k, v in dyn.as_dict().items() if k not in _DYNACONF_KEYS}
    except Exception as exc:  # a bad @format token, say
        problems.append(ConfigProblem(WHOLE_FILE, f"cannot be loaded: {exc}", "fix it", main))
        return fallback, problems
    settings, found = build_settings(plain_data(raw, sources, problems), sources, files)
    if main not in given_files and "public_url" not in sources:
        # Nothing set public_url because there is no settings file: say that, not the key.
        fix = (
            "copy config/settings.example.toml (or the repository's settings.toml) there, "
            "or name the file with --settings PATH"
        )
        whole = ConfigProblem(WHOLE_FILE, "does not exist", fix, os.path.abspath(main))
        found = [whole, *(p for p in found if p.key != "public_url")]
    return settings, problems + found


def load_settings(
    path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewaySettings:
    """Settings from `path` (default ./settings.toml), `.secrets.toml` and the environment."""
    settings, problems = check_settings(path, overrides=overrides, environ=environ)
    if problems:
        raise ConfigError(problems)
    return settings


def settings_from_mapping(data: Mapping[str, Any]) -> GatewaySettings:
    """Settings from a plain mapping (tests, embedding), checked like a file."""
    problems: list[ConfigProblem] = []
    sources = {"": "settings"}
    settings, found = build_settings(plain_data(data, sources, problems), sources, ())
    if problems or found:
        raise ConfigError(problems + found)
    return settings
