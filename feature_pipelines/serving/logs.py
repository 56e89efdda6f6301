"""The feature server's logs: one JSON object per line. Access logs (one per request) go to
stdout, everything else (start, stop, errors) to stderr."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, BinaryIO

import orjson

ACCESS_LOGGER = "featurestore.serve.access"
SERVER_LOGGER = "featurestore.serve"
# Attributes every LogRecord has; anything else was passed with `extra=` and becomes a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class AccessLog:
    """The access log: per request one JSON line on stdout, with the fields a `JsonFormatter` line
    has (time, level, logger, message) and the request's.

    Off the hot path: a line is one `orjson.dumps` into a buffer (through `logging` it took about
    25 us, a tenth of what a one-entity request costs the server), and the buffer is written at
    most `FLUSH_S` after its first line, at `BATCH` lines, and when the server stops: one write
    for many requests under load instead of one each (BENCHMARKS.md, Feature server)."""

    FLUSH_S = 0.05
    BATCH = 256

    def __init__(self, stream: BinaryIO | None = None):
        self._stream = stream  # None: the process's stdout at the time of each write
        self._lines: list[bytes] = []
        self._scheduled = False
        self._failed = False

    def write(self, message: str, fields: dict[str, Any]) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._lines.append(orjson.dumps({"time": stamp, "level": "info", "logger": ACCESS_LOGGER, "message": message,
                                         **fields}, default=str))
        if len(self._lines) >= self.BATCH:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
                self._scheduled = True
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = b"\n".join(self._lines) + b"\n"
        self._lines = []
        try:
            stream = self._stream or sys.stdout.buffer
            stream.write(data)
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed stdout must not fail requests
            if not self._failed:
                self._failed = True
                logging.getLogger(SERVER_LOGGER).error(f"the access log cannot be written to stdout: {exc}")


def log_config(level: str = "INFO") -> dict[str, Any]:
    """`logging.config.dictConfig` settings for the server and uvicorn (whose own access log is off;
    ours is `AccessLog`)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            SERVER_LOGGER: {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }
