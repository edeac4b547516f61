"""The admin API under `/admin`: instances, routes, plugins, the queue, dead letters,
unrouted (held) messages and the status summary.

Every call needs `Authorization: Bearer <admin.token>`. Without a configured token the API is
closed (403) rather than open, since it can replay jobs and shows customers' conversations.
Job payloads are summarized, never dumped: they hold message text and provider `extra` data.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from gateway.http_errors import error_response
from gateway.metrics import Metrics
from gateway.store.base import HeldMessage, Job, Store

Endpoint = Callable[[Request], Awaitable[Response]]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_JOB_IDS = 10_000
#: A `POST /admin/replay` body holds at most MAX_JOB_IDS ids; far less than this.
MAX_BODY_BYTES = 1024 * 1024
_REJECTED = "gateway_admin_rejected_total"
# Payload fields that identify a message without revealing what it says or any credential.
_SUMMARY_FIELDS = ("kind", "conversation_id", "native_id", "target", "status", "instance")
_JOB_FIELDS = (
    *("id", "kind", "route", "source", "destination", "lane"),
    *("attempts", "last_error", "dead_at", "created_at", "replay_of"),
)
_JOB_DETAIL_FIELDS = ("state", "available_at", "sending_since")


class AdminBackend(Protocol):
    """What the admin API needs from the running gateway."""

    @property
    def store(self) -> Store: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def admin_token(self) -> str | None: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    async def instances_info(self) -> list[dict[str, Any]]: ...

    async def routes_info(self) -> list[dict[str, Any]]: ...

    async def plugins_info(self) -> list[dict[str, Any]]: ...

    async def status_info(self) -> dict[str, Any]:
        """What needs a person (`gateway status`)."""
        ...

    def wake(self, destination: str | None = None) -> None:
        """Have the deliverer look for work now (after a replay)."""
        ...


class _Invalid(Exception):
    """A request parameter is wrong; answered with 422 naming it."""

    def __init__(self, parameter: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message
        self.status = status


def admin_routes(gateway: AdminBackend) -> Mount:
    """The `/admin` mount; add it to the app's routes."""

    def guarded(endpoint: Endpoint) -> Endpoint:
        async def wrapper(request: Request) -> Response:
            refusal = _check_token(gateway, request)
            if refusal is not None:
                if _REJECTED in gateway.metrics:
                    gateway.metrics.inc(_REJECTED)
                return refusal
            try:
                return await endpoint(request)
            except _Invalid as exc:
                return error_response(exc.status, exc.message, parameter=exc.parameter)

        return wrapper

    async def instances(_request: Request) -> Response:
        return JSONResponse({"instances": await gateway.instances_info()})

    async def routes(_request: Request) -> Response:
        return JSONResponse({"routes": await gateway.routes_info()})

    async def plugins(_request: Request) -> Response:
        return JSONResponse({"plugins": await gateway.plugins_info()})

    async def queue(_request: Request) -> Response:
        now = gateway.clock()
        destinations = []
        for item in await gateway.store.stats(now):
            oldest = item.oldest_ready_at
            age = None if oldest is None else max(0.0, now - oldest)
            destinations.append({**asdict(item), "oldest_age_seconds": age})
        return JSONResponse({"now": now, "destinations": destinations})

    async def dead_letters(request: Request) -> Response:
        query = request.query_params
        limit = _int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        jobs = await gateway.store.dead_letters(
            limit=limit,
            destination=query.get("destination") or None,
            lane=query.get("lane") or None,
        )
        return JSONResponse({"dead_letters": [job_view(job) for job in jobs]})

    async def job(request: Request) -> Response:
        job_id = _job_id(request.path_params["job_id"])
        found = await gateway.store.get_job(job_id) if job_id <= MAX_JOB_ID else None
        if found is None:
            return error_response(404, f"no job {job_id}")
        return JSONResponse({"job": job_view(found, full=True)})

    async def replay_one(request: Request) -> Response:
        job_id = _job_id(request.path_params["job_id"])
        found = await gateway.store.get_job(job_id) if job_id <= MAX_JOB_ID else None
        if found is None:
            return error_response(404, f"no job {job_id}")
        if found.state != "dead":
            return error_response(409, f"job {job_id} is not dead-lettered", state=found.state)
        pairs = await gateway.store.replay_jobs(job_ids=[job_id], now=gateway.clock())
        gateway.wake(found.destination)
        return JSONResponse(replayed_view(pairs))

    async def replay_many(request: Request) -> Response:
        selector = _replay_selector(await _json_body(request))
        pairs = await gateway.store.replay_jobs(now=gateway.clock(), **selector)
        gateway.wake(None)
        return JSONResponse(replayed_view(pairs))

    async def unrouted(request: Request) -> Response:
        query = request.query_params
        limit = _int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        after = _int_param(query.get("after"), "after", 0, 0, 2**62)
        dead = query.get("dead", "") in ("1", "true", "yes")
        messages = await gateway.store.held(
            limit=limit, instance=query.get("instance") or None, dead=dead, after=after
        )
        counts = [asdict(s) for s in await gateway.store.held_stats()]
        return JSONResponse({"counts": counts, "messages": [held_view(m) for m in messages]})

    async def unrouted_replay(request: Request) -> Response:
        body = await _json_body(request)
        ids = body.get("ids", []) if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids
        ):
            raise _Invalid("ids", "ids must be a list of held message ids (or leave it out: all)")
        if len(ids) > MAX_JOB_IDS:
            raise _Invalid("ids", f"at most {MAX_JOB_IDS} ids at once")
        count = await gateway.store.replay_held(ids=ids, now=gateway.clock())
        return JSONResponse({"held_again": count})

    async def status(_request: Request) -> Response:
        return JSONResponse(await gateway.status_info())

    return Mount(
        "/admin",
        routes=[
            Route("/instances", guarded(instances), methods=["GET"]),
            Route("/routes", guarded(routes), methods=["GET"]),
            Route("/plugins", guarded(plugins), methods=["GET"]),
            Route("/queue", guarded(queue), methods=["GET"]),
            Route("/dead-letters", guarded(dead_letters), methods=["GET"]),
            Route("/jobs/{job_id}", guarded(job), methods=["GET"]),
            Route("/dead-letters/{job_id}/replay", guarded(replay_one), methods=["POST"]),
            Route("/replay", guarded(replay_many), methods=["POST"]),
            Route("/unrouted", guarded(unrouted), methods=["GET"]),
            Route("/unrouted/replay", guarded(unrouted_replay), methods=["POST"]),
            Route("/status", guarded(status), methods=["GET"]),
        ],
        name="admin",
    )


def _check_token(gateway: AdminBackend, request: Request) -> Response | None:
    expected = gateway.admin_token
    if not expected:
        return error_response(
            403,
            "the admin API is disabled: set admin.token in .secrets.toml "
            "or the GATEWAY_ADMIN__TOKEN environment variable",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given:
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        response = error_response(401, "wrong admin token")
    else:
        response = error_response(401, "admin API needs an Authorization: Bearer token")
    response.headers["WWW-Authenticate"] = 'Bearer realm="gateway admin"'
    return response


# views ------------------------------------------------------------------------------------
def job_view(job: Job, *, full: bool = False) -> dict[str, Any]:
    """A job as the admin API shows it; the payload only as `payload_summary`."""
    names = _JOB_FIELDS + _JOB_DETAIL_FIELDS if full else _JOB_FIELDS
    view: dict[str, Any] = {name: getattr(job, name) for name in names}
    view["payload_summary"] = summarize_payload(job.payload)
    return view


def replayed_view(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """What a replay did: how many, and each parked job's new id (a replay makes a job)."""
    return {"replayed": len(pairs), "jobs": [{"job": old, "new_job": new} for old, new in pairs]}


def held_view(message: HeldMessage) -> dict[str, Any]:
    """A held message as the admin API shows it; the event only as `payload_summary`."""
    view: dict[str, Any] = {
        name: getattr(message, name)
        for name in ("id", "instance", "target", "conversation", "held_at", "reason", "dead_at")
    }
    view["payload_summary"] = summarize_payload(message.event)
    return view


def summarize_payload(payload: Any) -> dict[str, Any]:
    """What kind of thing a payload is and which message it is about, nothing it says."""
    summary: dict[str, Any] = {"bytes": len(json.dumps(payload, default=str))}
    if not isinstance(payload, dict):
        summary["type"] = type(payload).__name__
        return summary
    summary["keys"] = sorted(str(k) for k in payload)[:50]
    # The pipeline nests the event one level down (`{"event": {...}, "target": ...}`); deeper
    # dicts are provider `extra` data, which may hold anything, so they are not looked at.
    for part in (payload, *(v for v in payload.values() if isinstance(v, dict))):
        for name in _SUMMARY_FIELDS:
            value = part.get(name)
            short = isinstance(value, str) and len(value) <= 200
            if name not in summary and (short or _is_number(value)):
                summary[name] = value
        text = part.get("text")
        if isinstance(text, str) and "text_length" not in summary:
            summary["text_length"] = len(text)
        attachments = part.get("attachments")
        if isinstance(attachments, list) and "attachments" not in summary:
            summary["attachments"] = len(attachments)
    return summary


#: Job ids are 64-bit integers in both stores: a larger one names no job (and would overflow).
MAX_JOB_ID = 2**63 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# parameters -------------------------------------------------------------------------------
def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise _Invalid(name, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _job_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise _Invalid("id", "the job id must be a positive integer")
    return int(raw)


async def _json_body(request: Request) -> Any:
    # Read in chunks up to a small cap: a replay selector is tiny, and an admin token alone
    # must not let a client make the gateway buffer an unbounded body.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Invalid("body", f"the body is larger than {MAX_BODY_BYTES} bytes", status=413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise _Invalid("body", "the body must be a JSON object") from None


def _replay_selector(body: Any) -> dict[str, Any]:
    """The keyword arguments for `Store.replay` from a `POST /admin/replay` body."""
    if not isinstance(body, dict):
        raise _Invalid("body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"job_ids", "lane", "since", "until"})
    if unknown:
        raise _Invalid(unknown[0], f"unknown field {unknown[0]!r}")
    given = [key for key in ("job_ids", "lane") if key in body]
    if "since" in body or "until" in body:
        given.append("since/until")
    if len(given) != 1:
        raise _Invalid(
            "body",
            'give exactly one selector: {"job_ids": [...]}, {"lane": "..."} '
            'or {"since": ..., "until": ...}',
        )
    if "job_ids" in body:
        return {"job_ids": _job_ids(body["job_ids"])}
    if "lane" in body:
        lane = body["lane"]
        if not isinstance(lane, str) or not lane:
            raise _Invalid("lane", "lane must be a non-empty string")
        return {"lane": lane}
    since = _time_param(body.get("since"), "since")
    until = _time_param(body.get("until"), "until")
    if since is None and until is None:
        # Both null would select every dead letter; make that an explicit choice.
        raise _Invalid("since", 'give "since" or "until" (or both) as a time')
    if since is not None and until is not None and since > until:
        raise _Invalid("until", "until must not be before since")
    return {"since": since, "until": until}


def _job_ids(value: Any) -> list[int]:
    valid = isinstance(value, list) and 0 < len(value) <= MAX_JOB_IDS
    if not valid or not all(
        _is_number(i) and isinstance(i, int) and 0 < i <= MAX_JOB_ID for i in value
    ):
        raise _Invalid(
            "job_ids", f"job_ids must be a list of 1 to {MAX_JOB_IDS} job ids (1 to {MAX_JOB_ID})"
        )
    return list(dict.fromkeys(value))


def _time_param(value: Any, name: str) -> float | None:
    """UNIX seconds or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if _is_number(value) and math.isfinite(value):  # json.loads accepts Infinity and NaN
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    raise _Invalid(name, f"{name} must be UNIX seconds or an ISO 8601 time")
