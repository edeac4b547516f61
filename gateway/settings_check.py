"""Settings checks that need the loaded providers; `gateway.settings` re-exports both.

Kept apart from the loader so that reading settings needs no plugin, while `gateway check`
and `gateway run` add these once the plugins are loaded.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigProblem
from gateway.providers import Provider
from gateway.settings_model import SECRET_WORDS

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings, InstanceSettings


def validate_instances(
    settings: GatewaySettings, providers: Mapping[str, type[Provider]]
) -> list[ConfigProblem]:
    """Problems only the providers can tell: unknown names, kinds, each provider's settings."""
    problems: list[ConfigProblem] = []

    def add(key: str, message: str, fix: str) -> None:
        problems.append(ConfigProblem(key, message, fix, settings.origin(key)))

    for name in sorted(settings.channels.keys() & settings.crms.keys()):
        add(f"crms.{name}", f"{name!r} is also a channel", "rename one: names share /webhooks/")
    for inst in settings.channels.values():
        portals = inst.options.get("portals")
        if portals is not None and (
            not isinstance(portals, list) or not all(isinstance(p, str) and p for p in portals)
        ):
            add(
                f"channels.{inst.name}.portals",
                f"must be a list of CRM tenants, got {portals!r}",
                'e.g. portals = ["acme.bitrix24.com"] (Bitrix24: member_ids or domains)',
            )
    # A missing secret belongs in .secrets.toml beside the settings file, or its variable.
    secrets_file = os.path.join(os.path.dirname(settings.sources.get("", "")), ".secrets.toml")
    for inst in (*settings.channels.values(), *settings.crms.values()):
        if inst.provider:  # a missing one was reported when the settings were read
            for key, message, fix, variable in _instance(inst, providers):
                if variable is None:
                    add(key, message, fix)
                else:
                    file = f"{secrets_file} (or {variable})"
                    problems.append(ConfigProblem(key, message, fix, file))
    for route in settings.routes:
        for end, own, other in (
            ("channel", settings.channels, settings.crms),
            ("crm", settings.crms, settings.channels),
        ):
            name = getattr(route, end)
            key = f"routes.{route.name}.{end}"
            if not name or name in own:
                continue
            if name in other:
                add(key, f"{name!r} is not a {end} instance", f"name a [{end}s.NAME] instance")
            else:
                known = ", ".join(own) or f"none yet: add a [{end}s.NAME] table"
                add(key, f"names no instance {name!r}", f"use one of: {known}")
        crm = settings.crms.get(route.crm)
        cls = providers.get(crm.provider) if crm is not None else None
        if cls is not None:
            problem = cls.check_route_target(route.target)
            if problem is not None:
                add(f"routes.{route.name}.target", problem[0], problem[1])
    return problems


#: Name suffixes reserved for private networks: no service on the internet resolves them.
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def public_url_problems(
    settings: GatewaySettings, providers: Mapping[str, type[Provider]]
) -> list[ConfigProblem]:
    """A `public_url` the services calling the webhooks cannot use (each provider's
    `public_url_needs`), unless `allow_local_public_url = true` says that is intended."""
    if settings.allow_local_public_url:
        return []
    needs: dict[str, list[str]] = {}
    for inst in settings.instances.values():
        cls = providers.get(inst.provider)
        for need in cls.public_url_needs if cls is not None else ():
            needs.setdefault(need, []).append(f"{inst.kind}s.{inst.name} ({inst.provider})")
    url = urlsplit(settings.public_url)
    found = []
    unreachable = _unreachable(url.hostname or "")
    if unreachable and "internet" in needs:
        found.append(f"{unreachable}, which {', '.join(needs['internet'])} cannot reach")
    if url.scheme != "https" and "https" in needs:
        found.append(f"plain http, which {', '.join(needs['https'])} will not call")
    if not found:
        return []
    fix = (
        "set public_url to the https:// address the internet reaches this gateway at (a "
        "reverse proxy with TLS: docs/deploy.md); for a rehearsal on this machine or an "
        "on-premise Bitrix24 on your network, set allow_local_public_url = true"
    )
    message = f"{settings.public_url!r} is " + "; and ".join(found)
    return [ConfigProblem("public_url", message, fix, settings.origin("public_url"))]


def _unreachable(host: str) -> str | None:
    """Why the internet cannot reach `host`, or None when it may."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None if address.is_global else f"a {_kind_of(address)} address"
    if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        return "a name for this machine or a private network"
    if "." not in host:
        return "a host name without a dot (no public DNS name)"
    return None


def _kind_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "loopback" if address.is_loopback else "private"


def _instance(
    inst: InstanceSettings, providers: Mapping[str, type[Provider]]
) -> list[tuple[str, str, str, str | None]]:
    """(key, message, fix, the variable of a missing secret or None)."""
    key = f"{inst.kind}s.{inst.name}"
    cls = providers.get(inst.provider)
    if cls is None:
        same = sorted(n for n, c in providers.items() if c.kind == inst.kind)
        close = difflib.get_close_matches(inst.provider, same, n=1)
        fix = f"did you mean {close[0]!r}? " if close else ""
        fix += f"{inst.kind} providers: {', '.join(same)}" if same else "none is loaded"
        fix += " (`gateway plugins` shows plugins that failed to load)"
        return [(f"{key}.provider", f"unknown provider {inst.provider!r}", fix, None)]
    if cls.kind != inst.kind:
        where = f"[{'crms' if inst.kind == 'channel' else 'channels'}.{inst.name}]"
        message = f"{inst.provider!r} is a {cls.kind} provider, not a {inst.kind} one"
        return [(f"{key}.provider", message, f"move the table to {where}", None)]
    try:
        found = list(cls.validate_settings(inst.options))
    except Exception as exc:  # a plugin bug must not hide the other problems
        found = [("provider", f"cannot be checked: {exc!r}", "tell the plugin's authors")]
    problems: list[tuple[str, str, str, str | None]] = []
    for option, message, fix in found:
        variable = None
        if option in cls.secret_settings and option not in inst.options:
            variable = f"GATEWAY_{key.upper().replace('.', '__')}__{option.upper()}"
            fix += f"; keep it in .secrets.toml or {variable}, not in settings.toml"
        problems.append((f"{key}.{option}", message, fix, variable))
    known = (*cls.required_settings, *cls.optional_settings, *cls.secret_settings)
    for option in inst.options:
        # Near misses only: keys a provider reads without declaring them stay allowed.
        close = difflib.get_close_matches(option, known, n=1, cutoff=0.8)
        if option not in known and close:
            message = f"is not a setting of provider {inst.provider!r}"
            problems.append((f"{key}.{option}", message, f"did you mean {close[0]}?", None))
    return problems


def secret_values(settings: GatewaySettings, providers: Mapping[str, type[Provider]]) -> set[str]:
    """Every configured value that must never appear in logs or command output."""
    found = {settings.admin_token} if settings.admin_token else set()
    found |= set(settings.encryption_keys)
    password = urlsplit(settings.store_url).password
    if password:
        found |= {password, unquote(password)}
    for inst in (*settings.channels.values(), *settings.crms.values()):
        cls = providers.get(inst.provider)
        _collect(inst.options, cls.secret_settings if cls else frozenset(), found, False)
    return found


def _collect(
    options: Mapping[str, Any], declared: frozenset[str], found: set[str], inherited: bool
) -> None:
    for key, value in options.items():
        secret = inherited or key in declared or any(w in key.lower() for w in SECRET_WORDS)
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, Mapping):
                _collect(item, frozenset(), found, secret)
            elif secret and item not in (None, "") and not isinstance(item, bool):
                found.add(str(item))
