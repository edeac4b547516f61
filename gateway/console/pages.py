"""The console's pages: what an operator looks at (GET only, nothing changes)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gateway.admin import summarize_payload
from gateway.console import chart as charts
from gateway.console.actions import job_id
from gateway.console.trace import trace as trace_of
from gateway.console.web import View
from gateway.models import AccountStatus
from gateway.store.base import Job

#: How many parked messages (and unrouted ones, of each kind) one page lists.
PARKED_LIMIT = 200


async def signin(view: View) -> Response:
    if view.session is not None:
        return view.redirect("/")
    return view.render(
        "signin.html",
        disabled=not view.gateway.admin_token,
        reason=view.request.query_params.get("reason"),
    )


async def overview(view: View) -> Response:
    width = charts.HOURS * 3600 / charts.BUCKETS
    # Buckets end at the next whole bucket, so a reload keeps them in place.
    end = (view.now // width + 1) * width
    buckets = await view.gateway.store.activity(end - width * charts.BUCKETS, width, charts.BUCKETS)
    return view.render(
        "overview.html",
        attention=await attention(view),
        instances=await instances(view),
        queue=await queue(view),
        chart=charts.render(buckets, view.t),
        legend=charts.legend(),
    )


async def trace(view: View) -> Response:
    query = view.request.query_params.get("q", "").strip()[:200]
    found = await trace_of(view.gateway.store, query, view.now) if query else None
    return view.render("trace.html", query=query, trace=found)


async def attention(view: View) -> dict[str, Any]:
    """What `gateway status` says needs a person: messages no route carries and what the
    providers find wrong in their stored state (a route to a portal that is not installed).
    Parked jobs and instances not connected have their own tables on the page."""
    report = await view.gateway.status_info()
    return {"unrouted": report["unrouted"], "problems": report["problems"]}


async def instances(view: View) -> list[dict[str, Any]]:
    """Each instance with its state, phone number, QR (when it waits for a scan) and error."""
    gateway = view.gateway
    found = []
    for info in await gateway.instances_info():
        state = await gateway.account_state(info["name"])
        troubled = state.status not in (AccountStatus.CONNECTED, AccountStatus.UNKNOWN)
        found.append(
            {
                **info,
                "phone": getattr(state, "phone", None),
                "qr": state.qr if state.status is AccountStatus.NEEDS_QR else None,
                "error": state.detail if troubled else None,
                "note": None if troubled else state.detail,
            }
        )
    return found


async def queue(view: View) -> list[dict[str, Any]]:
    now = view.now
    rows = []
    for item in await view.gateway.store.stats(now):
        oldest = item.oldest_ready_at
        rows.append(
            {
                "destination": item.destination,
                "ready": item.ready,
                "dead": item.dead,
                "oldest_age": None if oldest is None else max(0, round(now - oldest)),
            }
        )
    return rows


async def routes(view: View) -> Response:
    gateway = view.gateway
    return view.render(
        "routes.html",
        routes=await gateway.routes_info(),
        channels=gateway.instance_names("channel"),
        crms=gateway.instance_names("crm"),
        notice=_known(view.request.query_params.get("notice"), ("linked", "unlinked")),
        name=view.request.query_params.get("name", ""),
        problem=view.request.query_params.get("problem"),
    )


async def parked(view: View) -> Response:
    query = view.request.query_params
    jobs = await view.gateway.store.dead_letters(limit=PARKED_LIMIT)
    return view.render(
        "parked.html",
        jobs=[parked_row(job) for job in jobs],
        notice=query.get("notice"),
        count=job_id(query.get("n", "0")) or 0,
        pairs=_pairs(query.get("as", "")),
        problem=query.get("problem"),
        job=query.get("job"),
    )


def parked_row(job: Job) -> dict[str, Any]:
    summary = summarize_payload(job.payload)
    return {
        "id": job.id,
        "kind": job.kind,
        "route": job.route,
        "destination": job.destination,
        "lane": job.lane,
        "conversation": summary.get("conversation_id") or job.lane.rsplit("|", 1)[-1],
        "message": summary.get("native_id"),
        "reason": job.last_error or "",
        "attempts": job.attempts,
        "dead_at": job.dead_at,
        "replay_of": getattr(job, "replay_of", None),
    }


def _known(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


def _pairs(raw: str) -> list[tuple[str, str]]:
    """`1:2,3:4` (old job: new job) from a replay's redirect."""
    pairs = []
    for part in raw.split(","):
        old, _, new = part.partition(":")
        if old.isdigit() and new.isdigit():
            pairs.append((old, new))
    return pairs[:50]


async def plugins(view: View) -> Response:
    return view.render("plugins.html", plugins=await view.gateway.plugins_info())


async def unrouted(view: View) -> Response:
    """Messages no route carries: waiting for one, and those that waited too long."""
    store, query = view.gateway.store, view.request.query_params
    count = query.get("n", "")
    return view.render(
        "unrouted.html",
        waiting=await store.held(limit=PARKED_LIMIT),
        expired=await store.held(limit=PARKED_LIMIT, dead=True),
        notice=_known(query.get("notice"), ("held",)),
        count=job_id(count) or 0,
        problem=_known(query.get("problem"), ("selection",)),
    )
