"""Entry point: ``python -m agent`` serves the agent on PY_AGENT_PORT."""

from __future__ import annotations

from agent.app import create_app
from agent.settings import AgentSettings
from pagi.server import serve_http_service


def main() -> None:
    """Serve the agent; exit 2 with a message when it cannot start."""
    serve_http_service("agent", AgentSettings, create_app)
