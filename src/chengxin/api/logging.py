"""Structured logs: one JSON object per line, and nothing personal in them.

Every request gives one line on the ``chengxin.access`` logger (see
:mod:`chengxin.api.middleware`): time, method, route template, status,
duration, the principal's name and role, and the request id. Never the path
(it holds identifiers), the query string (it holds identifiers and
purposes), a body, a subject's name or identifier, or a client address
(personal data under GDPR Art. 4(1)).

Exceptions are logged by type and stack frames only: their messages may
quote the input (an invalid identifier names itself). uvicorn's own access
log is switched off by ``serve`` for the same reason: it prints raw paths.
"""

from __future__ import annotations

import logging
import math
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

ACCESS_LOGGER = "chengxin.access"
"""The logger of the per-request lines."""


def _frames(exc: BaseException) -> list[str]:
    """``file:line in function`` for each frame, without the exception's message."""
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)]


class _Stamps:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")``, cheaper.

    The date and time of day are formatted once per second (a busy server logs
    thousands of lines in each); the milliseconds are rounded as ``datetime``
    rounds them (half to even, to the microsecond, then cut).
    """

    def __init__(self) -> None:
        self._last = (-1, "")  # (second, its text): one tuple, read and replaced whole

    def __call__(self, t: float) -> str:
        """The instant ``t`` (seconds since the epoch) as ISO 8601 UTC, to the millisecond."""
        frac, whole = math.modf(t)
        us = round(frac * 1e6)
        second = int(whole)
        if us >= 1_000_000:
            second, us = second + 1, us - 1_000_000
        elif us < 0:
            second, us = second - 1, us + 1_000_000
        last_second, prefix = self._last
        if second != last_second:
            stamp = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            prefix = stamp.removesuffix("+00:00")
            self._last = (second, prefix)
        return f"{prefix}.{us // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's fields.

    Fields come from ``extra={"fields": {...}}``; an exception becomes its type
    and frames (its message is left out: it may quote personal data).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stamp = _Stamps()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, Any] = {
            "time": self._stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["exception"] = type(exc).__qualname__
            data["frames"] = _frames(exc)
        return orjson.dumps(data, default=str).decode()


def log_config(level: str = "info") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``serve``: JSON to stderr, no raw access log."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            # uvicorn's access lines print the raw path and query: never enabled.
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "chengxin": {"handlers": ["stderr"], "level": lvl, "propagate": False},
        },
    }
