"""The process log: every line the server and its workers write to stderr, in one format.

Everything that logs in a gateway process goes through the standard library's ``logging``:
onegate's own modules, uvicorn (``uvicorn.error``: start, stop, worker supervision), Alembic and
the other libraries. One formatter on one stderr handler of the root logger therefore covers
every line, and :func:`logging_config` describes it as a ``dictConfig`` dictionary: uvicorn
applies the dictionary it is given (``uvicorn.Config(log_config=...)``) in the supervisor and
again in each worker it spawns, so a gateway writes the same lines with one worker or with N.

Two formats, one line per record either way, each starting from a UTC timestamp:

- ``json``: one object per line, ``{"ts", "level", "logger", "pid", "message"}`` plus ``exc``
  (the traceback, as one string) when there is one. ``ts`` is RFC 3339 with milliseconds, the
  access log's format (:mod:`onegate.observability.accesslog`).
- ``text``: ``2025-01-31T12:00:00.123Z WARNING onegate.upstreams[4242]: message``, for a
  person at a terminal.

``auto`` picks ``text`` when stderr is a terminal and ``json`` otherwise (a container, a
service manager, a pipe to a collector). It is resolved once, in the server process; the
workers inherit its stderr and get the resolved format.

The formatter is a small ``logging.Formatter`` with ``json.dumps`` rather than structlog: the
lines come from other libraries' stdlib loggers, which structlog could only format through its
own stdlib bridge (``ProcessorFormatter``), and these lines are rare (start, stop, reloads,
health changes), far from the request path where structlog was measured too slow
(the access log keeps its own f-string line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "text"]

#: Loggers kept to warnings and errors: their INFO lines describe library internals (Alembic
#: announces its plugins and each migration step on every start) rather than the gateway.
QUIET_LOGGERS = ("alembic",)

_FORMATTERS = {
    "json": "onegate.observability.processlog.JsonFormatter",
    "text": "onegate.observability.processlog.TextFormatter",
}


def timestamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds: ``2025-01-31T12:00:00.123Z``."""
    seconds = int(created)
    milliseconds = int((created - seconds) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{milliseconds:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback included)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: a message echoing what a client sent cannot smuggle control characters
        # (or a fake second line) into the log.
        return json.dumps(document, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """A readable line per record: timestamp, level, logger and process, message."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{timestamp(record.created)} {record.levelname:<7} "
            f"{record.name}[{record.process}]: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def resolve_format(requested: LogFormat, stream: TextIO | None = None) -> Literal["json", "text"]:
    """``requested``, with ``auto`` decided by whether ``stream`` (stderr) is a terminal."""
    if requested != "auto":
        return requested
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # replaced or closed stderr
        return "json"


def logging_config(log_format: Literal["json", "text"], level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dictionary of a gateway process.

    Every logger propagates to the root's single stderr handler. uvicorn's own loggers are
    reset to propagate (its default configuration gives them handlers of their own, with its
    ``INFO:     `` format). ``disable_existing_loggers`` is off: onegate's modules create their
    loggers at import, before this runs, and must keep logging.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"process": {"()": _FORMATTERS[log_format]}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "process",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
            },
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
        },
    }
