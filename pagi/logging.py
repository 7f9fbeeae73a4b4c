"""One logging setup for every service: one JSON object per line on stdout.

Each record carries ``time, level, service, request_id, event`` plus any
structured fields passed as ``extra={"fields": {...}}`` (see :func:`log_event`).
uvicorn's own loggers are routed through the same formatter.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pagi.request_id import current_request_id

_service_name = "pagi"


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service_name,
            "request_id": getattr(record, "request_id", None) or current_request_id(),
            "event": getattr(record, "event", None) or record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "info") -> None:
    """Route the root logger and uvicorn's loggers to JSON lines on stdout."""
    global _service_name
    _service_name = service
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(numeric)


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that leaves formatting to :func:`configure_logging`."""
    return {"version": 1, "disable_existing_loggers": False}


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields."""
    logger.log(level, event, extra={"event": event, "fields": fields})
