"""Running the model gateway: ``python -m gateway``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gateway.server import start_server
from gateway.settings import GatewaySettings
from pagi.logging import configure_logging, log_event
from pagi.settings import load_settings

logger = logging.getLogger("gateway")


async def serve(settings: GatewaySettings) -> int:
    """Serve until SIGINT/SIGTERM; the exit code."""
    try:
        server = await start_server(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        log_event(logger, "gateway_start_failed", logging.ERROR, reason=str(exc))
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(grace=2.0)
    return 0


def main() -> None:
    """Entry point: load settings, configure logs, serve."""
    settings = load_settings("gateway", GatewaySettings)
    configure_logging("gateway", settings.log_level)
    sys.exit(asyncio.run(serve(settings)))
