"""The console's form actions (POST): sign in and out, link and unlink routes, replay.

Each answers with a 303 redirect to the page it came from, carrying what happened in the
query string, so a reload never repeats an action and the page works without JavaScript.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.responses import Response

from gateway.admin import MAX_JOB_ID
from gateway.console import session as sessions
from gateway.console.web import View, end_session, start_session
from gateway.providers import Route

ROUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DIRECTIONS = ("both", "inbound", "outbound")
MAX_SELECTED = 1000


def job_id(value: object) -> int | None:
    """A job id typed into a form: ASCII digits within the stores' 64-bit ids, else None."""
    text = str(value)
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_JOB_ID:
        return None
    return int(text)


async def signin(view: View) -> Response:
    form = await view.request.form()
    given = str(form.get("token") or "")
    if not sessions.token_matches(given, view.gateway.admin_token):
        metrics = view.gateway.metrics
        if "gateway_admin_rejected_total" in metrics:
            metrics.inc("gateway_admin_rejected_total")
        return view.render(
            "signin.html", status=401, disabled=not view.gateway.admin_token, reason="wrong"
        )
    return start_session(view, view.redirect("/"))


async def signout(view: View) -> Response:
    return await end_session(view, view.redirect("/signin", reason="signedout"))


async def link(view: View) -> Response:
    form = await view.request.form()
    name = _text(form, "name")
    target = _text(form, "target") or None
    direction = _text(form, "direction") or "both"
    gateway = view.gateway
    problem = None
    if not ROUTE_NAME.fullmatch(name):
        problem = "name: letters, digits, '.', '_' or '-', at most 64"
    elif name in gateway.route_table.mapping():
        problem = f"a route named {name} exists"
    elif direction not in DIRECTIONS:
        problem = f"direction: one of {', '.join(DIRECTIONS)}"
    else:
        route = Route(name, _text(form, "channel"), _text(form, "crm"), target, direction)  # type: ignore[arg-type]
        try:
            await gateway.add_route(route)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        return view.redirect("/routes", problem=problem, name=name)
    return view.redirect("/routes", notice="linked", name=name)


async def unlink(view: View) -> Response:
    form = await view.request.form()
    name = _text(form, "name")
    route = view.gateway.route_table.mapping().get(name)
    if route is None or route.origin != "store":
        return view.redirect("/routes", problem=f"no route {name} linked at run time", name=name)
    await view.gateway.remove_route(name)
    return view.redirect("/routes", notice="unlinked", name=name)


async def replay(view: View) -> Response:
    """One job, the selected ones, a conversation (lane) or a time window of parked ones."""
    form = await view.request.form()
    mode = _text(form, "mode")
    store = view.gateway.store
    selector: dict[str, Any]
    if mode in ("one", "selected"):
        raw = form.getlist("job") if mode == "selected" else [form.get("job")]
        ids = [job for job in map(job_id, raw) if job is not None][:MAX_SELECTED]
        if not ids:
            return view.redirect("/parked", problem="selection")
        if mode == "one":
            found = await store.get_job(ids[0])
            if found is None or found.state != "dead":
                return view.redirect("/parked", problem="job", job=ids[0])
        selector = {"job_ids": ids}
    elif mode == "conversation":
        lane = _text(form, "lane")
        if not lane:
            return view.redirect("/parked", problem="selection")
        selector = {"lane": lane}
    else:
        since, until = _moment(_text(form, "since")), _moment(_text(form, "until"))
        if since is None and until is None:
            return view.redirect("/parked", problem="window")
        selector = {"since": since, "until": until}
    pairs = await store.replay_jobs(now=view.now, **selector)
    view.gateway.wake(None)
    shown = ",".join(f"{old}:{new}" for old, new in pairs[:50])
    return view.redirect("/parked", notice="replayed", n=len(pairs), **{"as": shown})


async def hold_again(view: View) -> Response:
    """Unrouted messages that waited too long wait again (the selected ones, or all), to be
    delivered once a route carries them; as `POST /admin/unrouted/replay`."""
    form = await view.request.form()
    ids = [held for held in map(job_id, form.getlist("id")) if held is not None][:MAX_SELECTED]
    if not ids and _text(form, "all") != "1":
        return view.redirect("/unrouted", problem="selection")
    count = await view.gateway.store.replay_held(ids=ids, now=view.now)
    view.gateway.wake(None)
    return view.redirect("/unrouted", notice="held", n=count)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip()[:500] if isinstance(value, str) else ""


def _moment(value: str) -> float | None:
    """A `datetime-local` value (taken as UTC, as the form says) in UNIX seconds."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
