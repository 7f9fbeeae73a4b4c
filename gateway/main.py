"""Running the model gateway: ``python -m gateway``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from gateway.server import start_server
from gateway.settings import GatewaySettings
from pagi.logging import configure_logging, log_event

logger = logging.getLogger("gateway")


def describe_invalid_settings(error: ValidationError) -> str:
    """One line per bad setting, named by its environment variable, without its value.

    The values are left out because one of them may be the API key.
    """
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in problem["loc"]).upper() or "settings"
        lines.append(f"  {name}: {problem['msg']}")
    return "\n".join(lines)


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
    try:
        settings = GatewaySettings()
    except ValidationError as exc:
        print(f"gateway: invalid settings:\n{describe_invalid_settings(exc)}", file=sys.stderr)
        sys.exit(2)
    configure_logging("gateway", settings.log_level)
    sys.exit(asyncio.run(serve(settings)))
