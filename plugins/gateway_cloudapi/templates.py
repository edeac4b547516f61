"""The approved message templates of the WhatsApp Business Account, synced and checked.

`GET /{waba_id}/message_templates?fields=name,language,status,components,parameter_format`
lists them page by page (`paging.next`); the approved ones are kept in the instance state
as name, language and the names of their parameters (`{{1}}`, `{{2}}` positional or
`{{first_name}}` named, in the body and a text header). The list is refreshed every
`template_sync_minutes` and, on demand, when a send names a template it does not know
(at most once a minute), so a template approved a moment ago can be used at once.

A CRM send that names a template is checked here before Meta is called: unknown name or
language, or a wrong number of parameters, is refused with a reason the CRM user sees.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import JSON, PermanentError, ProviderState

from .client import GraphClient

log = logging.getLogger("gateway.cloudapi")

STATE_KEY = "templates"
ON_DEMAND_EVERY = 60.0
MAX_PAGES = 50
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    language: str
    #: Parameter names in the order they are given: "1", "2"... or named ones.
    body: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    named: bool = False

    @property
    def parameter_count(self) -> int:
        return len(self.header) + len(self.body)

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "language": self.language,
            "body": list(self.body),
            "header": list(self.header),
            "named": self.named,
        }

    @classmethod
    def from_json(cls, data: Any) -> Template | None:
        if not isinstance(data, dict) or not data.get("name"):
            return None
        return cls(
            str(data["name"]),
            str(data.get("language") or ""),
            tuple(str(p) for p in data.get("body") or ()),
            tuple(str(p) for p in data.get("header") or ()),
            bool(data.get("named")),
        )

    def components(self, values: Sequence[str]) -> list[dict[str, JSON]]:
        """The `components` of a send filling the parameters with `values`, in order."""
        out: list[dict[str, JSON]] = []
        given = [" ".join(v.split()) for v in values]  # no line breaks or runs of spaces
        for kind, names in (("header", self.header), ("body", self.body)):
            if not names:
                continue
            chunk, given = given[: len(names)], given[len(names) :]
            parameters: list[JSON] = []
            for name, value in zip(names, chunk, strict=True):
                entry: dict[str, JSON] = {"type": "text", "text": value}
                if self.named:
                    entry["parameter_name"] = name
                parameters.append(entry)
            out.append({"type": kind, "parameters": parameters})
        return out


def parse_template(raw: Any) -> Template | None:
    """One entry of `message_templates`, if it is approved."""
    if not isinstance(raw, dict) or raw.get("status") != "APPROVED":
        return None
    body: list[str] = []
    header: list[str] = []
    for component in raw.get("components") or ():
        if not isinstance(component, dict):
            continue
        kind = str(component.get("type") or "").upper()
        text = component.get("text")
        if not isinstance(text, str):
            continue
        names = list(dict.fromkeys(_PLACEHOLDER.findall(text)))
        if kind == "BODY":
            body = names
        elif kind == "HEADER" and component.get("format", "TEXT") == "TEXT":
            header = names
    named = raw.get("parameter_format") == "NAMED" or any(not n.isdigit() for n in (*body, *header))
    if not named:
        body.sort(key=int)
        header.sort(key=int)
    return Template(
        str(raw.get("name")), str(raw.get("language")), tuple(body), tuple(header), named
    )


class TemplateBook:
    def __init__(
        self,
        client: GraphClient,
        state: ProviderState,
        waba_id: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.state = state
        self.waba_id = waba_id
        self.clock = clock
        self._asked_at = -ON_DEMAND_EVERY

    async def sync(self) -> list[Template]:
        """Fetch every approved template of the account and keep them."""
        if not self.waba_id:
            return []
        url: str | None = f"{self.client.base}/{self.waba_id}/message_templates"
        params: dict[str, str] | None = {
            "fields": "name,language,status,components,parameter_format",
            "limit": "100",
        }
        found: list[Template] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page = await self.client.get(url, params)
            for raw in page.get("data") or ():
                template = parse_template(raw)
                if template is not None:
                    found.append(template)
            paging = page.get("paging")
            url = paging.get("next") if isinstance(paging, dict) else None
            params = None  # `next` carries the query
        await self.state.put(
            STATE_KEY, {"synced_at": self.clock(), "items": [t.to_json() for t in found]}
        )
        log.info("synced %d approved templates of account %s", len(found), self.waba_id)
        return found

    async def all(self) -> list[Template]:
        stored = await self.state.get(STATE_KEY)
        items = stored.get("items") if isinstance(stored, dict) else None
        return [t for t in map(Template.from_json, items or ()) if t is not None]

    async def choose(
        self, name: str, language: str, values: Sequence[str], default_language: str
    ) -> Template:
        """The template a send names, checked; `PermanentError` saying what is wrong."""
        matches = await self._named(name)
        if not matches and self.waba_id and self.clock() - self._asked_at >= ON_DEMAND_EVERY:
            self._asked_at = self.clock()
            await self.sync()
            matches = await self._named(name)
        if not matches:
            if not self.waba_id:
                # Nothing to check against: Meta judges the name (and its error is shown).
                return Template(
                    name, language or default_language, tuple(map(str, range(1, len(values) + 1)))
                )
            raise PermanentError(
                f"WhatsApp template {name!r} is not among the approved templates of the account",
                code="template_unknown",
            )
        template = _pick(matches, language, default_language)
        if template is None:
            have = ", ".join(sorted(t.language for t in matches))
            raise PermanentError(
                f"WhatsApp template {name!r} has no {language!r} version (it has {have})",
                code="template_language",
            )
        if len(values) != template.parameter_count:
            raise PermanentError(
                f"WhatsApp template {name!r} takes {template.parameter_count} parameters, "
                f"{len(values)} given",
                code="template_parameters",
            )
        return template

    async def _named(self, name: str) -> list[Template]:
        return [t for t in await self.all() if t.name == name]


def _pick(matches: list[Template], language: str, default: str) -> Template | None:
    if language:
        return next((t for t in matches if t.language == language), None)
    if len(matches) == 1:
        return matches[0]
    return next((t for t in matches if t.language == default), None)
