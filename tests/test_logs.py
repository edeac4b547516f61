"""Logging: formats, extra fields, and secrets that never reach the output."""

from __future__ import annotations

import io
import json
import logging
import time
import warnings
from collections.abc import Iterator

import pytest

from gateway import logs
from gateway.logs import Redactor, configure_logging
from gateway.testing import redaction

SECRET = "s3cr3t/value+42"
log = logging.getLogger("gateway.test")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The test kit masks every secret earlier tests' gateways configured (a webhook secret
    # "short", say): these tests check the production redactor on its own.
    monkeypatch.setattr(redaction, "_filter", logs.RedactingFilter(Redactor()))
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", *logs.FILTERED_LOGGERS)]
    saved = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for logger, (handlers, filters, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)
    logs._installed = None


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secrets_never_reach_the_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json", {SECRET, "abc"})
    log.info("token is %s; abc is too short to count as a secret", SECRET)
    log.info(f"inline {SECRET} in the message")
    log.warning("GET https://api.example.com/send?token=abc123&to=1 failed")
    log.info("headers %s", {"Authorization": "Bearer xyz.789", "Accept": "json"})
    log.info("encoded %s", "https://x.test/?t=s3cr3t%2Fvalue%2B42")
    log.info("store postgresql://gw:pg-pass@db/gw")
    log.info("extra", extra={"instance": "wa1", "detail": {"url": f"/w?x={SECRET}"}})
    try:
        raise RuntimeError(f"provider said no to https://api.test/{SECRET}/send")
    except RuntimeError:
        log.exception("send failed")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5", "POST", "/webhooks/wa1?token=qq11", "1.1", 200
    )
    err = capsys.readouterr().err
    for leaked in (SECRET, "s3cr3t%2Fvalue%2B42", "abc123", "xyz.789", "pg-pass", "qq11"):
        assert leaked not in err, leaked
    entries = [json.loads(line) for line in err.splitlines()]
    assert entries[0]["message"] == "token is ***; abc is too short to count as a secret"
    assert "token=***&to=1" in entries[2]["message"]
    assert "Bearer ***" in entries[3]["message"]
    assert entries[6]["detail"] == {"url": "/w?x=***"}
    assert "RuntimeError: provider said no to https://api.test/***/send" in entries[7]["exc"]
    assert entries[8]["message"] == '10.0.0.1:5 - "POST /webhooks/wa1?token=*** HTTP/1.1" 200'


def test_json_lines_carry_the_context_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "auto", (), stream=stream)  # not a terminal: JSON
    log.info(
        "delivered",
        extra={"message_id": "m1", "instance": "b24", "route": "main", "job_id": 7, "other": None},
    )
    log.debug("hidden at INFO")
    (entry,) = json_lines(stream)
    assert entry["level"] == "INFO" and entry["logger"] == "gateway.test"
    assert entry["message"] == "delivered"
    assert (entry["message_id"], entry["instance"], entry["route"], entry["job_id"]) == (
        "m1",
        "b24",
        "main",
        7,
    )
    assert "other" not in entry and str(entry["ts"]).endswith("Z")


def test_text_on_a_terminal_with_context_after_the_message() -> None:
    stream = Terminal()
    configure_logging("INFO", "auto", [SECRET], stream=stream)
    log.info("sent %s", SECRET, extra={"instance": "wa1", "job_id": 3})
    line = stream.getvalue().strip()
    assert line.endswith("INFO    gateway.test: sent *** [instance=wa1 job_id=3]")
    assert not line.startswith("{")


def test_configuring_again_replaces_the_handler_and_its_secrets() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", [], stream=first)
    configure_logging("INFO", "json", [SECRET], stream=second)
    log.info("value %s", SECRET)
    assert first.getvalue() == "" and SECRET not in second.getvalue()
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, logs.JsonFormatter)]
    assert len(ours) == 1


def test_clean_records_keep_their_arguments_for_other_formatters() -> None:
    configure_logging("INFO", "json", [SECRET], stream=io.StringIO())
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    access = logging.getLogger("uvicorn.access")
    keep = Keep()
    access.addHandler(keep)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/healthz", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/x?k={SECRET}", "1.1", 200)
    finally:
        access.removeHandler(keep)
    assert seen[0].args == ("1.2.3.4:5", "GET", "/healthz", "1.1", 200)
    assert seen[1].args == ("1.2.3.4:5", "GET", "/x?k=***", "1.1", 200)


def test_broken_log_arguments_do_not_leak_or_raise() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", "text", [SECRET], stream=stream)
    # Straight to our handler: pytest's own capture handler would choke on this record first.
    handler.handle(log.makeRecord(log.name, logging.INFO, __file__, 1, "%d items", (SECRET,), None))
    assert (
        SECRET not in stream.getvalue() and "unformattable arguments dropped" in stream.getvalue()
    )


def test_warnings_are_logged_and_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", [SECRET])
    warnings.warn(f"deprecated call with {SECRET}", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "deprecated call with ***" in err and SECRET not in err


def test_redaction_stays_fast_on_long_hostile_text() -> None:
    redactor = Redactor([SECRET])
    started = time.perf_counter()
    for text in ("a-" * 50_000, "token" * 20_000, "x://a:" * 20_000, "ab." * 30_000):
        redactor.redact(text)
    assert time.perf_counter() - started < 2.0


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure_logging("LOUD", "json", (), stream=io.StringIO())
