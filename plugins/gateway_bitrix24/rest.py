"""Calling a portal's REST API: auth, limits, refresh-and-retry, domain moves, batches.

Every call goes to `{client_endpoint}{method}` as JSON (so booleans stay booleans) with the
portal's access token, after a slot of the portal's request bucket. On `expired_token` the
tokens are refreshed (single-flight) and the call is repeated once; on a 302 (the portal was
renamed) the new domain is stored and the call repeated; on 503 QUERY_LIMIT_EXCEEDED the
client backs off briefly and retries, since the portal refused the request unseen.

Failures come out as the pipeline's delivery errors: a timeout after the request left is an
`AmbiguousError` for calls that are not safe to repeat (`imconnector.send.messages`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from gateway import AmbiguousError, DeliveryError, PermanentError, TemporaryError, Throttled

from .errors import REFRESH_CODES, classify, portal_problem, scrub
from .forms import as_dict, php_form_encode
from .limits import Limits
from .oauth import Tokens
from .records import PortalRecord, PortalStore

log = logging.getLogger("gateway.bitrix24")

USER_AGENT = "WhatsChat-Gateway (Bitrix24 Open Lines connector)"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_TIMEOUT = 30.0
#: Bitrix24 downloads a message's files while answering; cloud cuts requests at 60 s.
FILES_TIMEOUT = 70.0
#: Refresh this long before the portal's stated expiry, not at every call.
EXPIRY_MARGIN = 30.0
QUERY_LIMIT_RETRIES = 2
#: Seconds a method blocked inside a `batch` (end unknown) waits before one plain call.
BLOCKED_PROBE_AFTER = 2.0


@dataclass(slots=True)
class Reply:
    result: Any
    time: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchReply:
    results: dict[str, Any]
    errors: dict[str, DeliveryError]
    time: dict[str, Any]


class _Refresh(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Moved(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class _Limited(Exception):
    pass


ProblemHook = Callable[[PortalRecord], Awaitable[None]]


class RestClient:
    """REST calls to the portals of one instance."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        store: PortalStore,
        tokens: Tokens,
        limits: Limits,
        *,
        on_problem: ProblemHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.store = store
        self.tokens = tokens
        self.limits = limits
        self.on_problem = on_problem
        self.clock = clock

    async def usable(self, member_id: str) -> PortalRecord:
        """The portal's record, or a `PermanentError` saying why it cannot be used."""
        record = await self.store.get(member_id)
        if record is None:
            raise PermanentError(
                f"the app is not installed on portal {member_id}", code="NOT_INSTALLED"
            )
        if record.problem:
            raise PermanentError(
                record.problem_detail or record.problem, code=record.problem.upper()
            )
        return record

    def paused_for(self, member_id: str, method: str) -> float | None:
        return self.limits.paused_for(member_id, method)

    def probing(self, member_id: str, method: str) -> bool:
        """`method` was blocked inside a batch: its next call should go alone."""
        return self.limits.probing(member_id, method)

    async def call(
        self,
        member_id: str,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        ambiguous: bool = False,
        read_timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> Reply:
        """Call `method`; `token` calls as another user (no refresh), e.g. a page's AUTH_ID."""
        if token is None:
            record = await self.usable(member_id)
        else:
            found = await self.store.get(member_id)
            if found is None:
                raise PermanentError(
                    "the app is not installed on this portal", code="NOT_INSTALLED"
                )
            record = found
        paused = self.limits.paused_for(member_id, method)
        if paused is not None:
            raise TemporaryError(
                f"{method} is blocked on {record.domain} by its operation time limit",
                code="OPERATION_TIME_LIMIT",
                retry_after=paused,
            )
        if token is None and record.expires_at and self.clock() > record.expires_at - EXPIRY_MARGIN:
            record = await self.tokens.refresh(member_id, record.access_token)
        refreshed = moved = False
        limited = 0
        await self.limits.acquire(member_id)
        while True:
            try:
                reply = await self._post(
                    record,
                    method,
                    params or {},
                    token or record.access_token,
                    ambiguous,
                    read_timeout,
                )
                self.limits.resume(member_id, method)
                return reply
            except _Refresh as exc:
                if token is not None or refreshed:
                    raise PermanentError(
                        f"{record.domain} refused the access token ({exc.code})", code=exc.code
                    ) from None
                refreshed = True
                record = await self.tokens.refresh(member_id, record.access_token)
            except _Moved as exc:
                if moved:
                    raise TemporaryError(
                        f"{record.domain} redirected twice", code="REDIRECT"
                    ) from None
                moved = True
                record = await self._moved(record, exc.location, method)
            except _Limited:
                limited += 1
                wait = self.limits.saturate(member_id)
                if limited > QUERY_LIMIT_RETRIES or wait > self.limits.max_wait:
                    raise Throttled(
                        f"{record.domain} answered QUERY_LIMIT_EXCEEDED",
                        code="QUERY_LIMIT_EXCEEDED",
                        retry_after=wait,
                    ) from None
            await self.limits.acquire(member_id)

    async def ask_as(
        self, record: PortalRecord, method: str, token: str, params: Mapping[str, Any] | None = None
    ) -> Any:
        """One call with a user's token (an install's, a page's AUTH_ID) to `record`'s portal.

        `record` need not be stored yet (an install being confirmed); nothing is refreshed,
        followed or retried: a refused token is a `PermanentError`, anything else temporary.
        """
        await self.limits.acquire(record.member_id)
        try:
            reply = await self._post(record, method, params or {}, token, False, DEFAULT_TIMEOUT)
        except _Refresh as exc:
            raise PermanentError(
                f"{record.domain} refused the access token ({exc.code})", code=exc.code
            ) from None
        except _Moved:
            raise TemporaryError(f"{record.domain} redirected {method}", code="REDIRECT") from None
        except _Limited:
            raise Throttled(
                f"{record.domain} answered QUERY_LIMIT_EXCEEDED", code="QUERY_LIMIT_EXCEEDED"
            ) from None
        return reply.result

    async def batch(
        self,
        member_id: str,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]],
        *,
        halt: bool = False,
        ambiguous: bool = False,
        read_timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> BatchReply:
        """Run up to 50 commands in one request; keys must not be numbers (PHP lists)."""
        cmd = {key: f"{method}?{build_query(params)}" for key, (method, params) in commands.items()}
        reply = await self.call(
            member_id,
            "batch",
            {"halt": 1 if halt else 0, "cmd": cmd},
            ambiguous=ambiguous,
            read_timeout=read_timeout,
            token=token,
        )
        body = as_dict(reply.result)
        results = _keyed(body.get("result"))
        errors: dict[str, DeliveryError] = {}
        for key, raw in _keyed(body.get("result_error")).items():
            entry = as_dict(raw)
            code = str(entry.get("error") or "ERROR")
            description = str(entry.get("error_description") or "")
            method = commands[key][0] if key in commands else "batch"
            if code == "OPERATION_TIME_LIMIT":
                # The batch's own `time` block describes the batch, not the blocked method,
                # and a failed command has no `result_time` entry: its block's end is
                # unknown. Pause briefly; the next call of the method goes alone and its
                # 429 (if still blocked) carries the method's `operating_reset_at`.
                own = as_dict(_keyed(body.get("result_time")).get(key))
                probe = own.get("operating_reset_at") is None
                wait = BLOCKED_PROBE_AFTER if probe else _reset_in(own, self.clock())
                self.limits.pause(member_id, method, wait, probe=probe)
                errors[key] = Throttled(
                    f"{method} is blocked by its operation time limit",
                    code=code,
                    retry_after=wait,
                )
            elif code in REFRESH_CODES:
                errors[key] = TemporaryError(f"{method}: {code}", code=code, retry_after=0.0)
            else:
                errors[key] = classify(code, description)
                await self._problem(member_id, code)
        return BatchReply(results, errors, reply.time)

    async def _post(
        self,
        record: PortalRecord,
        method: str,
        params: Mapping[str, Any],
        token: str,
        ambiguous: bool,
        read_timeout: float,
    ) -> Reply:
        url = record.client_endpoint + method
        body = orjson.dumps({**params, "auth": token})
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            response = await self.http.post(
                url,
                content=body,
                headers=headers,
                timeout=httpx.Timeout(read_timeout, connect=10.0),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(
                f"cannot reach {record.domain}: {type(exc).__name__}", code="UNREACHABLE"
            ) from None
        except httpx.TransportError as exc:
            error = AmbiguousError if ambiguous else TemporaryError
            raise error(
                f"{method}: no answer from {record.domain} after the request was sent "
                f"({type(exc).__name__})",
                code="NO_ANSWER",
            ) from None
        status = response.status_code
        if status in REDIRECTS and response.headers.get("location"):
            raise _Moved(response.headers["location"])
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            if 400 <= status < 500 and status not in (408, 429):
                raise PermanentError(
                    f"{method}: HTTP {status} from {record.domain}", code=f"HTTP_{status}"
                )
            raise TemporaryError(
                f"{method}: HTTP {status} from {record.domain} without a JSON body",
                code=f"HTTP_{status}",
            )
        if "error" in data:
            code = str(data.get("error"))
            description = str(data.get("error_description") or "")
            if code in REFRESH_CODES:
                raise _Refresh(code)
            if code == "QUERY_LIMIT_EXCEEDED":
                raise _Limited()
            if code == "OPERATION_TIME_LIMIT":
                wait = _reset_in(as_dict(data.get("time")), self.clock())
                self.limits.pause(record.member_id, method, wait)
                raise Throttled(
                    f"{method} is blocked on {record.domain} by its operation time limit",
                    code=code,
                    retry_after=wait,
                )
            if token == record.access_token:  # a user's own token says nothing of the portal
                await self._problem(record.member_id, code)
            raise classify(
                code, f"{method}: {description}" if description else method, status=status
            )
        if "result" not in data:
            raise TemporaryError(f"{method}: answer without a result", code="NO_RESULT")
        return Reply(data["result"], as_dict(data.get("time")))

    async def _moved(self, record: PortalRecord, location: str, method: str) -> PortalRecord:
        """Follow a domain move: same path on a new host is stored; anything else refused."""
        target = urlsplit(location)
        old = urlsplit(record.client_endpoint)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise TemporaryError(f"{record.domain} redirected to an unusable URL", code="REDIRECT")
        if target.path.rstrip("/") != (old.path + method).rstrip("/"):
            raise PermanentError(
                f"{record.domain} redirected {method} to another path", code="REDIRECT"
            )
        endpoint = f"{target.scheme}://{target.netloc}{old.path}"
        async with self.store.lock(record.member_id):
            fresh = await self.store.get(record.member_id, fresh=True) or record
            if fresh.client_endpoint != endpoint:
                log.warning("portal %s moved to %s", fresh.domain, target.netloc)
                fresh.client_endpoint = endpoint
                await self.store.put(fresh)
        return fresh

    async def _problem(self, member_id: str, code: str) -> None:
        problem = portal_problem(code)
        if problem is None:
            return

        def change(record: PortalRecord) -> None:
            record.problem = problem[0]
            record.problem_detail = f"{record.domain}: {problem[1]}"

        record = await self.store.update(member_id, change)
        if record is not None:
            log.warning("portal %s: %s", record.domain, record.problem_detail)
            if self.on_problem is not None:
                await self.on_problem(record)


def _keyed(value: Any) -> dict[str, Any]:
    # PHP sends an empty array as [], and 0..n-1 keyed arrays as lists.
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _reset_in(time_block: Mapping[str, Any], now: float) -> float:
    """Seconds until `operating_reset_at`, read against the portal's own clock when given."""
    reset = time_block.get("operating_reset_at")
    portal_now = time_block.get("finish") or time_block.get("start") or now
    try:
        seconds = float(str(reset)) - float(str(portal_now))
    except ValueError:
        return 60.0
    return min(900.0, max(1.0, seconds))


def build_query(params: Mapping[str, Any]) -> str:
    """PHP `http_build_query` of nested params (for `batch` command strings)."""
    pairs = php_form_encode(params)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def error_text(exc: BaseException) -> str:
    return scrub(str(exc))
