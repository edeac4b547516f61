"""`batch`: up to 50 commands, `halt`, and `$result[key][field]` references."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .envelope import CallContext, RestError
from .formdata import lower_keys, parse_query, php_empty
from .state import RestCall

if TYPE_CHECKING:
    from .portal import FakePortal

MAX_COMMANDS = 50
_REFERENCE = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\]]*)\]")


def _php_array(mapping: dict[str, Any]) -> dict[str, Any] | list[Any]:
    # PHP arrays: empty -> [], keys 0..n-1 -> list, anything else -> object.
    if list(mapping) == [str(i) for i in range(len(mapping))]:
        return list(mapping.values())
    return mapping


def _resolve(results: dict[str, Any], match: re.Match[str]) -> str:
    value: Any = results.get(match.group(1))
    for segment in _SEGMENT.findall(match.group(2)):
        if isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        elif isinstance(value, dict):
            value = value.get(segment)
        else:
            value = None
    if value is None or isinstance(value, dict | list):
        return match.group(0)
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: _resolve(results, m), value)
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    return value


def _commands(cmd: Any) -> list[tuple[str, str]]:
    if isinstance(cmd, list):
        return [(str(i), str(c)) for i, c in enumerate(cmd)]
    if isinstance(cmd, dict):
        return [(str(k), str(c)) for k, c in cmd.items()]
    return []


async def run(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = lower_keys(params)
    halt = not php_empty(p.get("halt"))
    commands = _commands(p.get("cmd"))
    if len(commands) > MAX_COMMANDS:
        raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    times: dict[str, Any] = {}
    for key, command in commands:
        name, _, query = command.partition("?")
        method = name.strip().lower().removesuffix(".json")
        sub = _substitute(parse_query(query), results)
        own_token = sub.pop("auth", None)
        call = RestCall(method, sub, ctx.token, portal.clock(), batch_key=key)
        portal.calls.append(call)
        started = portal.now()
        try:
            if method == "batch":
                raise RestError(
                    405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                )
            sub_ctx = ctx
            if isinstance(own_token, str) and own_token:
                sub_ctx = portal.authenticate(own_token, webhook=False)
            outcome = await portal.invoke(method, sub, sub_ctx)
        except RestError as error:
            call.status, call.error = error.status, error.code
            errors[key] = {"error": error.code, "error_description": error.description}
            if halt:
                break
            continue
        call.status = 200
        call.result = results[key] = outcome
        times[key] = portal.time_block(started)
    return {
        "result": _php_array(results),
        "result_error": _php_array(errors),
        # No fake method pages its results, so these stay empty PHP arrays.
        "result_total": [],
        "result_next": [],
        "result_time": _php_array(times),
    }
