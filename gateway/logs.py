"""Logging: JSON lines for machines, readable text on a terminal, secrets always redacted.

Every record that reaches the gateway's handler is scrubbed first: configured secret values
(raw and URL-encoded), `token=...`-style parameters, `Authorization`/`Bearer` credentials,
Telegram-style bot tokens (also in URL paths) and URL passwords become `***`, in the
message, its arguments, the exception text and any extra field. uvicorn's access log goes
through the same filter, since webhook query strings carry tokens.

    log.info("delivered", extra={"instance": "wa1", "route": "main", "job_id": 7})
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO
from urllib.parse import quote, quote_plus

import orjson

MASK = "***"
#: Extra fields shown first and by name in text output; any other extra is carried too.
CONTEXT_FIELDS = ("instance", "route", "message_id", "job_id")
#: Shorter values are not redacted: masking every "ab" would make logs unreadable.
MIN_SECRET_LENGTH = 4
# Loggers whose records bypass root-level filters when someone gives them own handlers.
FILTERED_LOGGERS = ("uvicorn.access", "uvicorn.error")

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# uvicorn adds a colour-coded copy of some messages; it would only duplicate `message`.
_DROPPED_FIELDS = frozenset({"color_message"})
# No unbounded repeats before a required part: a long run of word characters in a message
# (a base64 blob, a customer's text) would otherwise take quadratic time or worse.
_WORDS = r"(?:token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|signature)[\w.-]{0,40}"
_SEPARATOR = r"[\"']?\s*[:=]\s*[\"']?"  # token=, token: and "token": "
_VALUE = r"(?!\*\*\*)[^\s\"',;&}\]]+"
_PATTERNS = (
    # Authorization: Bearer abc / "authorization": "Basic abc" / Authorization=abc
    # (possessive `?+`: an already masked "Bearer ***" must not be taken apart again)
    (rf"(?i)(authorization{_SEPARATOR}(?:(?:bearer|basic|token)\s+)?+){_VALUE}", rf"\1{MASK}"),
    (r"(?i)\b(bearer\s+)[\w.~+/=-]+", rf"\1{MASK}"),
    # token=abc in query strings and text, "access_token": "abc" in JSON
    (rf"(?i)({_WORDS}{_SEPARATOR}){_VALUE}", rf"\1{MASK}"),
    # Telegram-style bot tokens, also inside URL paths (`/bot123456:AAE.../getFile`)
    (r"\b(bot)?\d{5,}:[\w-]{30,}", rf"\1{MASK}"),
    # scheme://user:password@host
    (r"(?i)(://[^:/@\s]{1,256}:)[^@\s/]{1,256}@", rf"\1{MASK}@"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _PATTERNS)

_installed: tuple[logging.Handler, logging.Filter] | None = None


class Redactor:
    """Replaces secret values and credential-shaped text with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                values |= {secret, quote(secret, safe=""), quote_plus(secret)}
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(values, key=len, reverse=True)
        self._values = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        for pattern, replacement in _COMPILED:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: Any) -> Any:
        """Redact inside an extra field's value, keeping JSON-friendly types."""
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {str(k): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(item) for item in value]
        return self.redact(str(value))


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so no handler after it sees a secret."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", None) is self.redactor:
            return True
        self._message(record)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = record.exc_text or logging.Formatter().formatException(
                record.exc_info
            )
        # The traceback is kept as redacted text only: a later formatter must not re-render
        # the exception object, whose message may hold a URL with a token.
        record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                setattr(record, key, self.redactor.scrub(value))
        record._redacted = self.redactor
        return True

    def _message(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: logging would print them, secrets included
            message = f"{record.msg} (unformattable arguments dropped)"
            record.msg, record.args = message, None
        redacted = self.redactor.redact(message)
        if redacted == message:
            return
        # Keep the arguments' structure when redacting them one by one is enough: uvicorn's
        # own access formatter, for one, unpacks them.
        if isinstance(record.args, tuple):
            args = tuple(self.redactor.redact(a) if isinstance(a, str) else a for a in record.args)
            with contextlib.suppress(Exception):
                if str(record.msg) % args == redacted:
                    record.args = args
                    return
        record.msg, record.args = redacted, None


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_FIELDS and key not in _DROPPED_FIELDS and not key.startswith("_")
    }
    ordered = {key: fields.pop(key) for key in CONTEXT_FIELDS if key in fields}
    return {k: v for k, v in {**ordered, **fields}.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extra fields, exc."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Values, not the serialized line: masking text in JSON syntax could break the line.
        return orjson.dumps(self.redactor.scrub(entry)).decode()


class TextFormatter(logging.Formatter):
    """`2025-01-31 12:00:00 INFO gateway: delivered [instance=wa1 job_id=7]`."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        if extras:
            head, newline, rest = line.partition("\n")
            line = f"{head} [{extras}]{newline}{rest}"
        return self.redactor.redact(line)


def configure_logging(
    level: str | int = "INFO",
    fmt: Literal["auto", "json", "text"] = "auto",
    secrets: Iterable[str] = (),
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to `stream` (stderr), redacted; safe to call again.

    `fmt="auto"` writes JSON unless the stream is a terminal. A second call replaces the
    handler and filters installed by the first, so the CLI can log plugin errors before the
    settings (and with them the secrets) are known.
    """
    global _installed
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    stream = stream if stream is not None else sys.stderr
    redactor = Redactor(secrets)
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    redacting = RedactingFilter(redactor)
    handler.addFilter(redacting)
    root = logging.getLogger()
    if _installed is not None:
        old_handler, old_filter = _installed
        root.removeHandler(old_handler)
        for name in FILTERED_LOGGERS:
            logging.getLogger(name).removeFilter(old_filter)
    root.addHandler(handler)
    for name in ("uvicorn", *FILTERED_LOGGERS):
        # An in-process uvicorn started with its default log config (a test server, say)
        # leaves its own handlers and propagate=False: undo that so every line has one format.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        # Logger-level too: a handler attached to them later still sees redacted records.
        if name in FILTERED_LOGGERS:
            logger.addFilter(redacting)
    root.setLevel(numeric)
    # httpx logs every request URL at INFO; some providers put their token in the path.
    quiet = logging.WARNING if numeric > logging.DEBUG else logging.NOTSET
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)
    _installed = (handler, redacting)
    return handler
