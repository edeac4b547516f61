"""`GET /{waba_id}/message_templates`: the account's templates, page by page, as Graph lists them.

Each registered template (`FakeCloudApi.register_template`) is listed with `name`,
`language`, `status`, `category`, `id`, `parameter_format` and a `BODY` component whose text
has its `{{1}}`..`{{n}}` placeholders. `limit` (default 25) sizes a page; `paging.cursors`
and, while more remain, `paging.next` (the full URL with `after`) lead on. `status` and
`name` filter as Graph's query parameters do.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request

from .errors import param_error

if TYPE_CHECKING:
    from .server import FakeCloudApi
    from .state import Template

DEFAULT_LIMIT = 25


def _entry(template: Template) -> dict[str, Any]:
    placeholders = " ".join(f"{{{{{n}}}}}" for n in range(1, template.body_params + 1))
    text = f"Template {template.name}" + (f": {placeholders}" if placeholders else "")
    digest = hashlib.sha256(f"{template.name}:{template.language}".encode()).hexdigest()
    return {
        "name": template.name,
        "parameter_format": "POSITIONAL",
        "components": [{"type": "BODY", "text": text}],
        "language": template.language,
        "status": template.status,
        "category": template.category,
        "id": str(int(digest[:12], 16)),
    }


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode()


def _position(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError:
        raise param_error("Invalid cursor") from None


def list_templates(fake: FakeCloudApi, request: Request) -> dict[str, Any]:
    query = request.query_params
    rows = [_entry(t) for _, t in sorted(fake.templates.items())]
    if query.get("status"):
        wanted = {s.strip().upper() for s in query["status"].split(",")}
        rows = [r for r in rows if r["status"] in wanted]
    if query.get("name"):
        rows = [r for r in rows if query["name"] in r["name"]]
    try:
        limit = max(1, min(int(query.get("limit") or DEFAULT_LIMIT), 1000))
    except ValueError:
        raise param_error("Param limit must be an integer") from None
    start = _position(query.get("after"))
    page = rows[start : start + limit]
    fields = query.get("fields")
    if fields:
        keep = {f.strip() for f in fields.split(",")} | {"id"}
        page = [{k: v for k, v in row.items() if k in keep} for row in page]
    body: dict[str, Any] = {"data": page}
    if page:
        paging: dict[str, Any] = {
            "cursors": {"before": _cursor(start), "after": _cursor(start + len(page))}
        }
        if start + len(page) < len(rows):
            params = {**dict(query), "after": _cursor(start + len(page))}
            paging["next"] = f"{str(request.url).split('?', 1)[0]}?{urlencode(params)}"
        body["paging"] = paging
    return body
