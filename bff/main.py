"""Entry point: ``python -m bff`` serves the bff on GO_BFF_PORT."""

from __future__ import annotations

from bff.app import create_app
from bff.settings import BffSettings
from pagi.server import serve_http_service


def main() -> None:
    """Serve the bff; exit 2 with a message when it cannot start."""
    serve_http_service("bff", BffSettings, create_app)
