"""What the settings are: frozen dataclasses, and the reader that checks raw data into them.

`gateway.settings` re-exports everything public here; it adds where the data comes from
(files, variables). Every problem is collected with the file or variable that set the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from gateway.errors import ConfigProblem
from gateway.providers import Direction, ProviderKind

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LogFormat = Literal["auto", "json", "text"]
ENV_PREFIX = "GATEWAY_"
#: An option whose key contains one of these is a secret whatever its provider declares.
SECRET_WORDS = ("token", "secret", "password", "key")
#: Instance and route names: they appear in URLs (/webhooks/NAME) and in store keys.
DEFAULT_STORE_URL = "sqlite:///var/gateway.db"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class InstanceSettings:
    name: str
    kind: ProviderKind
    provider: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteSettings:
    name: str
    channel: str
    crm: str
    target: str | None = None
    direction: Direction = "both"


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int = 10
    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 8
    lease_seconds: float = 60.0
    poll_interval: float = 5.0
    reorder_window: float = 0.0
    #: Delivery in its own process beside the HTTP process(es) (`gateway.supervisor`);
    #: "auto": when the machine has more than one core.
    delivery_process: bool | Literal["auto"] = "auto"


@dataclass(frozen=True, slots=True)
class MediaSettings:
    directory: str = "var/media"
    max_total_bytes: int = 1024**3
    max_file_bytes: int = 64 * 1024**2
    ttl_seconds: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class FetchSettings:
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout: float = 30.0
    max_bytes: int = 64 * 1024**2


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """`[history]`: what linking a number imports of its recent history."""

    #: Days imported when a link does not say (the Bitrix24 settings page preselects it).
    days: float = 0.0
    #: The most a link may ask for (and never more than `[store] keep_events_days`).
    max_days: float = 30.0
    #: How fast imported messages are fed in (0: no limit but the queue's).
    messages_per_second: float = 20.0
    #: Imported messages wait while the destination has this many jobs ready.
    max_queue: int = 20


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    public_url: str
    #: `public_url` may be one the internet cannot reach (loopback, a name without a dot,
    #: a private address, plain http): a rehearsal against the fakes, an on-premise portal.
    allow_local_public_url: bool = False
    #: A PEM file of certificate authorities trusted for outbound https besides the usual
    #: ones (a rehearsal's own CA: `gateway rehearse`; a company's TLS-inspecting proxy).
    ca_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    store_url: str = DEFAULT_STORE_URL
    #: How long an accepted event (and so its dedupe key) is kept; longer than any
    #: provider redelivers (Meta retries for 7 days).
    keep_events_days: float = 30.0
    #: How long a message no route carries is held for a route to appear before it
    #: becomes a dead letter.
    hold_unrouted_days: float = 7.0
    #: The longest a change of shared state (routes, installs, tokens) made by another
    #: process goes unseen when its notification is lost (or on a shared SQLite file).
    state_check_seconds: float = 0.5
    admin_token: str | None = None
    #: `[store] encryption_key` first, then `decryption_keys`: plugin state sealed at rest.
    encryption_keys: tuple[str, ...] = ()
    max_body_bytes: int = 1024**2
    log_level: str = "INFO"
    log_format: LogFormat = "auto"
    #: uvicorn's line per request; off by default: at webhook rates it costs more than
    #: the request (each line is redacted, the URLs carry secrets).
    access_log: bool = False
    channels: dict[str, InstanceSettings] = field(default_factory=dict)
    crms: dict[str, InstanceSettings] = field(default_factory=dict)
    routes: list[RouteSettings] = field(default_factory=list)
    retry: RetrySettings = RetrySettings()
    workers: WorkerSettings = WorkerSettings()
    media: MediaSettings = MediaSettings()
    fetch: FetchSettings = FetchSettings()
    #: `[plugins.NAME]` tables, as written: each plugin reads its own (`PluginContext`).
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: HistorySettings = HistorySettings()
    files: tuple[str, ...] = ()
    #: Dotted key -> the file or variable that set it; "" -> the main settings file.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def instances(self) -> dict[str, InstanceSettings]:
        return {**self.channels, **self.crms}

    def webhook_url(self, instance: str, subpath: str = "") -> str:
        url = f"{self.public_url}/webhooks/{instance}"
        return f"{url}/{subpath.lstrip('/')}" if subpath else url

    def origin(self, key: str) -> str:
        """Where `key` was set; for a missing key, where its table is (the place to add it)."""
        return origin_of(self.sources, key)


_T = TypeVar("_T", bound="DataclassInstance")
_Kind = str | tuple[str, ...]  # a type name, or the allowed values of a choice
_TOP: dict[str, _Kind] = {"public_url": "str", "host": "text", "port": "int"}
_TOP |= {"max_body_bytes": "int", "log_format": ("auto", "json", "text")}
_TOP |= {"log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}
_TOP |= {"access_log": "bool", "allow_local_public_url": "bool", "ca_file": "text"}
_SECTIONS: tuple[str, ...] = ("store", "admin", "retry", "workers", "media", "fetch")
_SECTIONS += ("history", "channels", "crms", "routes", "plugins")
_KNOWN = (*_TOP, *_SECTIONS)
# Spellings people carry over from the dataclass fields or from an env var with one "_".
_ALIASES = {"store_url": "store.url", "admin_token": "admin.token", "database_url": "store.url"}
_MIN_ONE = {"max_body_bytes", "retry.max_attempts", "workers.concurrency", "fetch.max_bytes"}
_MIN_ONE |= {"media.max_total_bytes", "media.max_file_bytes", "history.max_queue"}
_ABOVE_ZERO = {"workers.lease_seconds", "workers.poll_interval", "media.ttl_seconds"}
_ABOVE_ZERO |= {"fetch.timeout", "store.keep_events_days", "store.hold_unrouted_days"}
_ABOVE_ZERO |= {"store.state_check_seconds", "history.max_days"}
_DIRECTIONS = ("both", "inbound", "outbound")
_KINDS = {"media.directory": "text"}  # where the field type alone is too lax
_KINDS["workers.delivery_process"] = "auto-or-bool"
_BAD = object()


def origin_of(sources: Mapping[str, str], key: str) -> str:
    if key in sources:
        return sources[key]
    parent = key
    while "." in parent:
        parent = parent.rsplit(".", 1)[0]
        if parent in sources:
            return sources[parent]
    for known, label in sources.items():
        if known.startswith(f"{key}."):
            return label
    return sources.get("", "settings")


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "__")


class _Reader:
    """Turns raw nested data into typed values, noting each problem where it came from."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, message: str, fix: str) -> None:
        self.problems.append(ConfigProblem(key, message, fix, origin_of(self.sources, key)))

    def unknown(self, table: Mapping[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            meant = (None if prefix else _ALIASES.get(key)) or (prefix + close[0] if close else "")
            variable = origin_of(self.sources, prefix + key).startswith("environment")
            section, _, name = meant.rpartition(".")
            drop = "unset the variable" if variable else "remove it"
            if meant and variable:
                fix = f"rename the variable to {_env_name(meant)}"
            elif meant:
                fix = f"did you mean {f'[{section}] {name}' if section else name}? otherwise {drop}"
            else:
                fix = f"{drop}; known keys here: {', '.join(known)}"
            self.problem(prefix + key, "is not a known setting", fix)

    def typed(self, key: str, value: Any, kind: _Kind) -> Any:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(kind, tuple):
            for choice in kind:
                if isinstance(value, str) and value.lower() == choice.lower():
                    return choice
            return self.wrong(key, value, f"one of {', '.join(kind)}")
        if kind == "bool":
            return value if isinstance(value, bool) else self.wrong(key, value, "true or false")
        if kind == "auto-or-bool":
            # An environment variable may spell the booleans as strings.
            words = {"auto": "auto", "true": True, "false": False}
            spelled = words.get(value.strip().lower()) if isinstance(value, str) else None
            if isinstance(value, bool) or spelled is not None:
                return value if isinstance(value, bool) else spelled
            return self.wrong(key, value, '"auto", true or false')
        if kind == "str":
            ok = isinstance(value, str) or (number and isinstance(value, int))
            return str(value) if ok else self.wrong(key, value, "a string")
        if kind == "text":  # a string that cannot be empty
            ok = isinstance(value, str) and bool(value.strip())
            return value if ok else self.wrong(key, value, "a non-empty string")
        if kind == "tuple[str, ...]":
            if isinstance(value, str):  # one variable can hold a comma-separated list
                value = [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return tuple(value)
            return self.wrong(key, value, "a list of strings")
        if not number or (kind == "int" and not isinstance(value, int)):
            return self.wrong(key, value, "a whole number" if kind == "int" else "a number")
        if not math.isfinite(value):
            return self.wrong(key, value, "a finite number")
        if key == "port" and not 1 <= value <= 65535:
            return self.wrong(key, value, "a port number from 1 to 65535")
        if key in _ABOVE_ZERO and value <= 0:
            return self.wrong(key, value, "a number above 0")
        if value < (1 if key in _MIN_ONE else 0):
            return self.wrong(key, value, f"at least {1 if key in _MIN_ONE else 0}")
        return float(value) if kind == "float" else value

    def wrong(self, key: str, value: Any, expected: str) -> object:
        secret = any(word in key.rsplit(".", 1)[-1] for word in SECRET_WORDS)
        got = f"a {type(value).__name__}" if secret else f"{value!r} ({type(value).__name__})"
        self.problem(key, f"must be {expected}, got {got}", f"set {key} to {expected}")
        return _BAD

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None or isinstance(value, Mapping):
            return value or {}
        self.problem(key, f"must be a table, got {value!r}", f"write it as a [{key}] table")
        return {}

    def values(
        self, table: Mapping[str, Any], kinds: Mapping[str, _Kind], prefix: str
    ) -> dict[str, Any]:
        self.unknown(table, tuple(kinds), prefix)
        typed = {
            k: self.typed(prefix + k, table[k], kind) for k, kind in kinds.items() if k in table
        }
        return {k: v for k, v in typed.items() if v is not _BAD}

    def plugin_tables(self, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """`[plugins.NAME]`: a table per plugin, its keys the plugin's own business."""
        tables: dict[str, dict[str, Any]] = {}
        for name, table in self.table(data, "plugins").items():
            if isinstance(table, Mapping):
                tables[name] = dict(table)
            else:
                fix = f"write it as a [plugins.{name}] table of that plugin's keys"
                self.problem(f"plugins.{name}", f"must be a table, got {table!r}", fix)
        return tables

    def section(self, cls: type[_T], data: Mapping[str, Any], name: str) -> _T:
        kinds = {
            f.name: _KINDS.get(f"{name}.{f.name}", str(f.type)) for f in dataclasses.fields(cls)
        }
        return cls(**self.values(self.table(data, name), kinds, f"{name}."))

    def instances(self, data: Mapping[str, Any], kind: ProviderKind) -> dict[str, InstanceSettings]:
        found: dict[str, InstanceSettings] = {}
        for name, table in self.table(data, f"{kind}s").items():
            key = f"{kind}s.{name}"
            if self.named(key, name, table):
                provider = table.get("provider")
                if not isinstance(provider, str) or not provider:
                    fix = f'add provider = "..." under [{key}]; `gateway plugins` lists them'
                    self.problem(f"{key}.provider", "is missing", fix)
                options = {k: v for k, v in table.items() if k != "provider"}
                found[name] = InstanceSettings(name, kind, provider or "", options)
        return found

    def routes(self, data: Mapping[str, Any]) -> list[RouteSettings]:
        found = []
        for name, table in self.table(data, "routes").items():
            key = f"routes.{name}"
            if not self.named(key, name, table):
                continue
            kinds: dict[str, _Kind] = {"channel": "str", "crm": "str", "target": "str"}
            values = self.values(table, {**kinds, "direction": _DIRECTIONS}, f"{key}.")
            for end in ("channel", "crm"):
                if end not in table:
                    self.problem(f"{key}.{end}", "is missing", f"name a [{end}s.NAME] instance")
            found.append(RouteSettings(name, **{"channel": "", "crm": "", **values}))
        return found

    def named(self, key: str, name: str, table: Any) -> bool:
        if not NAME_RE.match(name):
            fix = "use lower-case letters, digits, '-' and '_', starting with a letter or digit"
            self.problem(key, f"the name {name!r} cannot be used in URLs", fix)
        if not isinstance(table, Mapping):
            self.problem(key, f"must be a table, got {table!r}", f"write it as a [{key}] table")
        return isinstance(table, Mapping)


def build_settings(
    data: Mapping[str, Any], sources: Mapping[str, str], files: tuple[str, ...]
) -> tuple[GatewaySettings, list[ConfigProblem]]:
    r = _Reader(sources)
    r.unknown(data, _KNOWN)
    top = r.values({k: v for k, v in data.items() if k in _TOP}, _TOP, "")
    store_kinds: dict[str, _Kind] = {"url": "text", "keep_events_days": "float"}
    store_kinds |= {"hold_unrouted_days": "float", "state_check_seconds": "float"}
    store_kinds |= {"encryption_key": "str", "decryption_keys": "tuple[str, ...]"}
    store = r.values(r.table(data, "store"), store_kinds, "store.")
    if "://" not in store.setdefault("url", DEFAULT_STORE_URL):
        r.problem("store.url", "is not a URL", "use sqlite:///var/gateway.db or postgresql://…")
    # An empty token (GATEWAY_ADMIN__TOKEN= in a unit file) means unset, like no token at all.
    admin = r.values(r.table(data, "admin"), {"token": "str"}, "admin.")
    url = str(top.pop("public_url", "")).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        what = f"must be an http(s) URL, got {url!r}" if url else "is missing"
        r.problem("public_url", what, "set it to the address providers reach the gateway at")
        url = f"http://127.0.0.1:{top.get('port', 8080)}"
    if top.get("ca_file"):
        _check_ca_file(r, str(top["ca_file"]))
    retry = r.section(RetrySettings, data, "retry")
    if retry.max_delay < retry.base_delay:
        r.problem("retry.max_delay", "is below retry.base_delay", "raise max_delay")
    if retry.jitter > 1:
        r.problem("retry.jitter", "must be a fraction from 0 to 1", "use e.g. 0.2 for ±20%")
    keys = _encryption_keys(r, store)
    media = r.section(MediaSettings, data, "media")
    if media.max_file_bytes > media.max_total_bytes:
        r.problem("media.max_file_bytes", "is above media.max_total_bytes", "raise the total")
    settings = GatewaySettings(
        public_url=url,
        channels=r.instances(data, "channel"),
        crms=r.instances(data, "crm"),
        routes=r.routes(data),
        retry=retry,
        workers=r.section(WorkerSettings, data, "workers"),
        media=media,
        fetch=r.section(FetchSettings, data, "fetch"),
        plugins=r.plugin_tables(data),
        history=r.section(HistorySettings, data, "history"),
        store_url=store["url"],
        keep_events_days=store.get("keep_events_days", 30.0),
        hold_unrouted_days=store.get("hold_unrouted_days", 7.0),
        state_check_seconds=store.get("state_check_seconds", 0.5),
        admin_token=admin.get("token") or None,
        encryption_keys=keys,
        files=files,
        sources=dict(sources),
        **top,
    )
    return settings, r.problems


def _check_ca_file(r: _Reader, path: str) -> None:
    import ssl

    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        fix = "name a PEM file of CA certificates (BEGIN CERTIFICATE), or leave ca_file out"
        r.problem("ca_file", f"cannot be read as CA certificates: {exc}", fix)


def _encryption_keys(r: _Reader, store: Mapping[str, Any]) -> tuple[str, ...]:
    """`encryption_key` then `decryption_keys`, each checked to be a Fernet key."""
    from gateway.sealing import GENERATE, valid_key

    current = store.get("encryption_key") or ""
    older = tuple(store.get("decryption_keys") or ())
    if older and not current:
        r.problem(
            "store.decryption_keys", "is set without encryption_key", "set encryption_key too"
        )
    keys = ((current,) if current else ()) + older
    for key_name, key in [("store.encryption_key", current)] * bool(current) + [
        ("store.decryption_keys", k) for k in older
    ]:
        if not valid_key(key):
            fix = f"use a key made by: {GENERATE}"
            r.problem(key_name, "is not a Fernet key (32 bytes, url-safe base64)", fix)
            return ()
    return keys


def plain_data(
    value: Any, sources: Mapping[str, str], out: list[ConfigProblem], key: str = ""
) -> Any:
    """dynaconf boxes -> dicts and lists, keys lower-cased down to instance options.

    Variables are upper-case by nature, so names and keys are case-insensitive; deeper keys
    (say, HTTP headers inside an option) keep their case.
    """
    if isinstance(value, list | tuple):
        return [plain_data(item, sources, out, key) for item in value]
    if not isinstance(value, Mapping):
        return value
    plain: dict[str, Any] = {}
    for k, v in value.items():
        name = str(k).lower() if key.count(".") < 2 else str(k)
        dotted = f"{key}.{name}" if key else name
        if name in plain:
            fix = "keep one spelling: names and keys are case-insensitive"
            out.append(
                ConfigProblem(
                    dotted, "is set twice, in different case", fix, origin_of(sources, dotted)
                )
            )
        plain[name] = plain_data(v, sources, out, dotted)
    return plain
