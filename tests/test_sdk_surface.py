"""The public surface promised to plugin authors: `gateway.__all__`, each name with its own
docstring and a stability promise in docs/plugins.md, every hook and context member
documented there."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import gateway
from gateway import Hub, PluginContext, hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()


def section(title: str) -> str:
    start = GUIDE.index(title)
    end = GUIDE.find("\n## ", start + len(title))
    return GUIDE[start : end if end != -1 else None]


def own_doc(obj: object) -> str | None:
    """The docstring an object was given, not one inherited or made up by @dataclass."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):
        return None
    return doc


def alias_comment(name: str) -> bool:
    """A type alias or marker documented by a `#:` comment where it is defined."""
    pattern = re.compile(rf"^#: .*\n(#: .*\n)*{re.escape(name)}(: TypeAlias)? = ", re.M)
    return any(pattern.search(path.read_text()) for path in (ROOT / "gateway").glob("*.py"))


def test_every_public_name_has_a_docstring() -> None:
    undocumented = []
    for name in gateway.__all__:
        obj = getattr(gateway, name)
        plain = inspect.isclass(obj) or inspect.isfunction(obj)
        if not (own_doc(obj) if plain else alias_comment(name)):
            undocumented.append(name)
    assert undocumented == []


def test_every_public_name_has_a_stability_promise() -> None:
    table = section("## Public names and their stability")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    promised = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for name in re.findall(r"`(\w+)`", cells[0]):
            promised[name] = cells[-1]
    assert sorted(set(gateway.__all__) - set(promised)) == []
    assert sorted(set(promised) - set(gateway.__all__)) == []
    assert set(promised.values()) <= {"stable", "provisional"}


def test_every_hook_and_context_member_is_documented() -> None:
    hooks = [name for name, obj in vars(hookspecs).items() if hasattr(obj, "gateway_spec")]
    assert len(hooks) >= 7
    table = section("## Hooks")
    for hook in hooks:
        assert f"| `{hook}` | `{hook}(" in table, hook
    members = [n for n in vars(PluginContext) if not n.startswith("_")]
    members += ["public_url", "hub", "http"]
    for member in members:
        assert f"`context.{member}" in GUIDE, member
    for method in (n for n in vars(Hub) if not n.startswith("_")):
        assert f"`{method}(" in GUIDE, method


def test_the_example_channel_plugin_fits_in_under_200_lines() -> None:
    # The SDK's yardstick (issue 13): text, photos and documents both ways, a webhook
    # secret and webhook registration at start, on top of the SDK.
    provider = ROOT / "examples" / "telegramlike" / "gateway_telegramlike" / "provider.py"
    assert len(provider.read_text().splitlines()) < 200
