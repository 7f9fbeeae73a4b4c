"""Entry point: ``python -m memory``."""

from __future__ import annotations

from memory.app import create_app
from memory.settings import MemorySettings
from pagi.server import run_http_service


def main() -> None:
    """Serve the memory service on MEMORY_MOCK_PORT."""
    settings = MemorySettings()
    run_http_service(create_app(settings), "memory", settings)
