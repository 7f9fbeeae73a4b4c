"""Entry point: ``python -m bff``."""

from __future__ import annotations

from bff.app import create_app
from bff.settings import BffSettings
from pagi.server import run_http_service


def main() -> None:
    """Serve the bff on GO_BFF_PORT."""
    settings = BffSettings()
    run_http_service(create_app(settings), "bff", settings)
