"""Which WhatsApp template a CRM-written message names, from a robot or from an SMS text.

The robot has properties for it (`template` as `name` or `name:language`, and
`template_params`). "Send SMS" in a CRM card has only a text box, so there a template is
named on the text's first line, as a directive:

    #template order_ready:en | Anna | 12345
    #шаблон order_ready:ru | Анна | 12345

The words after the name, split on `|`, are the template's body parameters in order. Lines
after the directive are the text itself: what providers without templates (Chat API,
GREEN-API) send, and what the operator sees mirrored in the chat. Either way the choice
rides in `Message.extra["template"]`, where the Cloud API checks the name, language and
parameter count against the synced templates before sending, and refuses with a reason the
CRM user sees otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_DIRECTIVE = re.compile(
    r"^[ \t]*#(?:template|шаблон)[ \t]+(?P<name>[^\s|:]+)(?::(?P<language>[\w-]+))?[ \t]*"
    r"(?:\|(?P<params>[^\n]*))?[ \t]*$",
    re.IGNORECASE,
)
_LOOKS_LIKE_DIRECTIVE = re.compile(r"^[ \t]*#(?:template|шаблон)\b", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9_]{1,512}$")


class BadTemplateChoice(ValueError):
    """A template directive or robot property that names no possible template."""


@dataclass(frozen=True, slots=True)
class TemplateChoice:
    name: str
    language: str
    params: tuple[str, ...]

    def to_extra(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "params": list(self.params)}


def _checked(name: str, language: str, params: Iterable[str]) -> TemplateChoice:
    name = name.strip()
    if not _NAME.match(name):
        # Meta's template names are lower-case letters, digits and underscores.
        raise BadTemplateChoice(
            f"{name!r} is not a WhatsApp template name (lower-case letters, digits and _)"
        )
    return TemplateChoice(name, language.strip(), tuple(p for p in params if p != ""))


def from_robot(template: str, params: Iterable[Any]) -> TemplateChoice | None:
    """The robot's `template` (`name` or `name:language`) and `template_params` properties."""
    if not template.strip():
        return None
    name, _, language = template.partition(":")
    return _checked(name, language, (str(p).strip() for p in params))


def from_sms_text(body: str) -> tuple[TemplateChoice | None, str]:
    """The template an SMS text's first line names, and the text after that line."""
    first, newline, rest = body.partition("\n")
    match = _DIRECTIVE.match(first)
    if match is None:
        if _LOOKS_LIKE_DIRECTIVE.match(first):
            raise BadTemplateChoice(
                "the first line names a template but cannot be read: write "
                "`#template name:language | parameter | parameter`"
            )
        return None, body
    raw = match.group("params")
    params = [p.strip() for p in raw.split("|")] if raw is not None else []
    choice = _checked(match.group("name"), match.group("language") or "", params)
    return choice, rest if newline else ""
