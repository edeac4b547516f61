"""Log redaction for tests: captured logs (`caplog`, pytest's report) see what production
logs see, secrets masked.

In production `configure_logging` puts the redacting filter on the gateway's own handler.
Under pytest the handlers are pytest's, so the test kit redacts earlier, where every record
is made: a log record factory masks each record before any handler or filter sees it. Every
gateway the kit builds adds its configured secrets; `redact_in_tests` adds others (a fake's
token a test logs by hand).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from gateway.logs import RedactingFilter, Redactor

_secrets: set[str] = set()
_filter = RedactingFilter(Redactor())
_installed = False


def redact_in_tests(secrets: Iterable[str] = ()) -> None:
    """Mask `secrets` (and every credential-shaped text) in every log record from now on."""
    global _filter, _installed
    fresh = {s for s in secrets if s} - _secrets
    if fresh:
        _secrets.update(fresh)
        _filter = RedactingFilter(Redactor(_secrets))
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _filter.filter(record)
        return record

    logging.setLogRecordFactory(make_record)


def redacted_secrets() -> frozenset[str]:
    """The secrets masked so far (for assertions in the conformance kit)."""
    return frozenset(_secrets)
