"""Entry point: ``python -m bff``."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from bff.app import create_app
from bff.settings import BffSettings
from pagi.logging import configure_logging, log_event
from pagi.server import run_http_service

logger = logging.getLogger("bff.main")


def main() -> None:
    """Serve the bff on GO_BFF_PORT; exit 2 with a message when it cannot start."""
    try:
        settings = BffSettings()
    except ValidationError as exc:
        print(f"bff: invalid settings:\n{exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("bff", settings.log_level)
    try:
        app = create_app(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        # Missing or unreadable keys: a message for the operator, not a traceback.
        log_event(logger, "start_failed", logging.ERROR, reason=str(exc))
        sys.exit(2)
    run_http_service(app, "bff", settings)
