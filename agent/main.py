"""Entry point: ``python -m agent``."""

from __future__ import annotations

from agent.app import create_app
from agent.settings import AgentSettings
from pagi.server import run_http_service


def main() -> None:
    """Serve the agent on PY_AGENT_PORT."""
    settings = AgentSettings()
    run_http_service(create_app(settings), "agent", settings)
