"""Log lines: readable text, or one JSON object a line for a log collector.

``[service] log_format = "json"`` writes each record as an object with time, level,
logger and message, plus the mail's context where a step logged it (``extra=``):
ticket number, Message-ID, source.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a step may attach to a record with extra={...}; they become JSON fields.
CONTEXT_FIELDS = ("ticket", "message_id", "source", "outcome")
QUIET_LOGGERS = ("mail.log", "apscheduler", "aiohttp.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line; an exception's traceback as the field "exception"."""
        when = datetime.fromtimestamp(record.created, UTC)
        data = {"time": when.isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        data.update({k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup(level: str, log_format: str = "text") -> None:
    """Log to standard error at ``level`` in ``log_format``; chatty libraries only warn."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
