"""Running the model gateway: ``python -m gateway``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gateway.server import start_server
from gateway.settings import GatewaySettings
from pagi.app import create_app
from pagi.logging import configure_logging, log_event
from pagi.server import SideHttpServer, start_side_http_server
from pagi.settings import load_settings
from pagi.tracing import configure_tracing

logger = logging.getLogger("gateway")


async def start_metrics_server(settings: GatewaySettings) -> SideHttpServer | None:
    """The gateway's ``/metrics`` (and ``/health``) over HTTP, unless its port is 0."""
    if not settings.pagi_gateway_metrics_port:
        return None
    app = create_app(
        "gateway",
        metrics_token=settings.metrics_token(),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    side = await start_side_http_server(
        app, settings.pagi_bind_host, settings.pagi_gateway_metrics_port
    )
    log_event(logger, "gateway_metrics_serving", host=settings.pagi_bind_host, port=side.port)
    return side


async def serve(settings: GatewaySettings) -> int:
    """Serve until SIGINT/SIGTERM; the exit code."""
    try:
        server = await start_server(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        log_event(logger, "gateway_start_failed", logging.ERROR, reason=str(exc))
        return 1
    try:
        metrics = await start_metrics_server(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        log_event(logger, "gateway_start_failed", logging.ERROR, reason=f"metrics: {exc}")
        await server.stop(grace=0)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    if metrics is not None:
        await metrics.stop()
    await server.stop(grace=2.0)
    return 0


def main() -> None:
    """Entry point: load settings, configure logs, serve."""
    settings = load_settings("gateway", GatewaySettings)
    configure_logging("gateway", settings.log_level)
    configure_tracing("gateway")
    sys.exit(asyncio.run(serve(settings)))
