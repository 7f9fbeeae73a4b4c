"""Running one HTTP service under uvicorn, configured the same way for all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from pagi.http_protocol import PagiH11Protocol
from pagi.logging import configure_logging, log_event, uvicorn_log_config
from pagi.settings import CommonSettings, SettingsT, load_settings
from pagi.tracing import configure_tracing

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
    configure_tracing(service)
    try:
        app = build_app(settings)
    except STARTUP_ERRORS as exc:
        log_event(logger, "start_failed", logging.CRITICAL, reason=str(exc))
        print(f"{service}: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    run_http_service(app, service, settings)


class _SideServer(uvicorn.Server):
    """uvicorn in a loop that runs other work: the host process keeps its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class SideHttpServer:
    """A small HTTP server running beside a process's main work (the gateway's ``/metrics``)."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving (connections get ``grace`` seconds to finish)."""
        self.server.should_exit = True
        await asyncio.wait({self.task}, timeout=grace + 1)
        if not self.task.done():
            self.task.cancel()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.setblocking(False)
    return sock


async def start_side_http_server(app: FastAPI, host: str, port: int) -> SideHttpServer:
    """Serve ``app`` on ``host:port`` in the running loop; ``RuntimeError`` when it cannot listen.

    Port 0 takes a free port (:attr:`SideHttpServer.port` says which).
    """
    sock = _listen(host, port)
    config = uvicorn.Config(
        app,
        log_config=uvicorn_log_config(),
        loop="asyncio",
        http=PagiH11Protocol,
        lifespan="off",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=2,
    )
    server = _SideServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="side-http-server")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # its failure, if any
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped at start")
        await asyncio.sleep(0.01)
    return SideHttpServer(server, task, sock.getsockname()[1])
