"""The process log's formatters and format choice, and which worker speaks for health changes."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from onegate.observability import multiprocess
from onegate.observability.healthlog import HealthLog
from onegate.observability.processlog import (
    JsonFormatter,
    TextFormatter,
    logging_config,
    resolve_format,
    timestamp,
)


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("onegate.test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_timestamp_is_rfc3339_utc_with_milliseconds() -> None:
    assert timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert timestamp(1_700_000_000.0429) == "2023-11-14T22:13:20.042Z"


def test_json_keeps_a_traceback_and_hostile_text_on_one_line() -> None:
    line = JsonFormatter().format(_record('client sent %r\n{"fake": 1}', "\x1b[2J", exc=True))
    assert "\n" not in line
    assert "\x1b" not in line
    document = json.loads(line)
    assert document["level"] == "error"
    assert document["logger"] == "onegate.test"
    assert document["message"] == "client sent '\\x1b[2J'\n{\"fake\": 1}"
    assert document["exc"].startswith("Traceback") and "ValueError: boom" in document["exc"]


def test_text_line_starts_with_timestamp_level_and_logger() -> None:
    record = _record("upstream %s down", "main")
    line = TextFormatter().format(record)
    assert (
        line
        == f"{timestamp(record.created)} ERROR   onegate.test[{record.process}]: upstream main down"
    )


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert resolve_format("auto", _Stream(tty=True)) == "text"
    assert resolve_format("auto", _Stream(tty=False)) == "json"
    closed = io.StringIO()
    closed.close()  # its isatty() raises
    assert resolve_format("auto", closed) == "json"
    assert resolve_format("text", _Stream(tty=False)) == "text"
    assert resolve_format("json", _Stream(tty=True)) == "json"


def test_the_config_quiets_alembic_and_sends_uvicorn_through_the_root() -> None:
    config = logging_config("json")
    assert config["loggers"]["alembic"] == {"level": "WARNING"}
    assert config["loggers"]["uvicorn.error"] == {"handlers": [], "propagate": True}
    assert config["root"]["handlers"] == ["stderr"]
    assert config["disable_existing_loggers"] is False


def test_one_health_log_per_gateway_speaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    first, second = HealthLog(), HealthLog()  # as two workers would hold them
    try:
        with caplog.at_level(logging.DEBUG, logger="onegate.upstreams"):
            second_speaks_before = second.speaks_for_gateway()
            second.close()
            assert first.speaks_for_gateway()
            second.changed("main", "http://a:1", healthy=False)
            first.changed("main", "http://a:1", healthy=False)
        assert second_speaks_before  # the first to ask takes the lock...
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # ...and once it let go, the next one takes it; the other logs at DEBUG only.
        assert warnings == ["upstream main target http://a:1 is now unhealthy"]
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
        assert len(debug) == 1
        first.close()
        assert second.speaks_for_gateway()  # the speaker is gone: another takes over
    finally:
        first.close()
        second.close()


def test_outside_a_multiprocess_server_every_health_log_speaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    assert HealthLog().speaks_for_gateway()
    assert HealthLog().speaks_for_gateway()
