"""Entry point: ``python -m agent``."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from agent.app import create_app
from agent.settings import AgentSettings
from pagi.logging import configure_logging, log_event
from pagi.server import run_http_service

logger = logging.getLogger("agent.main")


def main() -> None:
    """Serve the agent on PY_AGENT_PORT; exit 2 with a message when it cannot start."""
    try:
        settings = AgentSettings()
    except ValidationError as exc:
        print(f"agent: invalid settings:\n{exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("agent", settings.log_level)
    try:
        app = create_app(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        # Missing or unreadable keys: a message for the operator, not a traceback.
        log_event(logger, "start_failed", logging.ERROR, reason=str(exc))
        sys.exit(2)
    run_http_service(app, "agent", settings)
