"""Logging set-up shared by the jobs: text for a terminal, JSON lines for log collectors.

A record may carry structured fields (``extra={EVENT: name, FIELDS: mapping}``, as the
ingest job's per-batch progress does): the text format shows its message (which repeats
them), the JSON format puts the fields themselves into the line.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys
from typing import Any

EVENT = "etl_event"
FIELDS = "etl_fields"


class LogFormat(enum.StrEnum):
    """How log records are written."""

    TEXT = "text"
    JSON = "json"
    # text on a terminal, JSON otherwise (EMR step logs, Glue's CloudWatch, docker logs)
    AUTO = "auto"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message or event fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        """Formats a record as one line of JSON."""
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, FIELDS, None)
        event = getattr(record, EVENT, None)
        if event is not None and isinstance(fields, dict):
            entry["event"] = event
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", log_format: LogFormat | str = LogFormat.TEXT) -> None:
    """Routes this project's loggers to stderr in one compact format.

    Nothing changes when the root logger has handlers already (an embedding application,
    pytest's capture).
    """
    chosen = LogFormat(log_format)
    if chosen is LogFormat.AUTO:
        chosen = LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON
    # py4j logs every gateway round-trip at INFO
    logging.getLogger("py4j").setLevel(logging.WARNING)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    if chosen is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
            )
        )
    root.addHandler(handler)
    root.setLevel(level)


def first_line(err: BaseException) -> str:
    """The first line of an error (a JVM error's own, not py4j's "error occurred while"), for
    records that must stay one line."""
    java = getattr(err, "java_exception", None)
    if java is not None:
        text = str(java.toString()).strip()
        return text.splitlines()[0] if text else type(err).__name__
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
