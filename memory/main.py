"""Entry point: ``python -m memory`` serves the memory on MEMORY_MOCK_PORT."""

from __future__ import annotations

from memory.app import create_app
from memory.settings import MemorySettings
from pagi.server import serve_http_service


def main() -> None:
    """Serve the memory; exit 2 with a message when it cannot start."""
    serve_http_service("memory", MemorySettings, create_app)
