"""Entry point: ``python -m memory``."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from memory.app import create_app
from memory.settings import MemorySettings
from pagi.logging import configure_logging, log_event
from pagi.server import run_http_service

logger = logging.getLogger("memory.main")


def main() -> None:
    """Serve the memory on MEMORY_MOCK_PORT; exit 2 with a message when it cannot start."""
    try:
        settings = MemorySettings()
    except ValidationError as exc:
        print(f"memory: invalid settings:\n{exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("memory", settings.log_level)
    try:
        app = create_app(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        # Missing or unreadable keys: a message for the operator, not a traceback.
        log_event(logger, "start_failed", logging.ERROR, reason=str(exc))
        sys.exit(2)
    run_http_service(app, "memory", settings)
