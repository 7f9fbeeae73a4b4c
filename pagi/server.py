"""Running one HTTP service under uvicorn, configured the same way for all."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from pagi.http_protocol import PagiH11Protocol
from pagi.logging import configure_logging, log_event, uvicorn_log_config
from pagi.settings import CommonSettings, SettingsT, load_settings

logger = logging.getLogger("pagi.server")

STARTUP_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, OSError)
"""What building an app raises when it cannot start safely (e.g. keys missing)."""

KEEP_ALIVE_SECONDS = 30
"""How long an idle client connection stays open between requests.

Longer than clients keep idle connections for reuse (httpx, which every
PAGI service calls with, keeps them 5 s): with equal timers a client sends
on a connection at the moment the server closes it, and the request fails
with a connection error (seen under load as ~0.3 % ReadError).
"""


def run_http_service(app: FastAPI, service: str, settings: CommonSettings) -> None:
    """Serve ``app`` on the service's contract port until SIGINT/SIGTERM."""
    configure_logging(service, settings.log_level)
    uvicorn.run(
        app,
        host=settings.pagi_bind_host,
        port=settings.port_of(service),
        log_config=uvicorn_log_config(),
        # The stdlib loop: uvloop spawns subprocesses ~20 % slower.
        loop="asyncio",
        http=PagiH11Protocol,
        access_log=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=5,
    )


def serve_http_service(
    service: str,
    settings_class: type[SettingsT],
    build_app: Callable[[SettingsT], FastAPI],
) -> None:
    """The ``main()`` of every HTTP service: settings, logs, app, serve.

    Exits 2 with a message for the operator (never a traceback) when the
    settings are invalid or the app cannot be built safely.
    """
    settings = load_settings(service, settings_class)
    configure_logging(service, settings.log_level)
    try:
        app = build_app(settings)
    except STARTUP_ERRORS as exc:
        log_event(logger, "start_failed", logging.CRITICAL, reason=str(exc))
        print(f"{service}: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    run_http_service(app, service, settings)
