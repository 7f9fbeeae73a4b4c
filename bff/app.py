"""The bff application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bff.console import install_console
from bff.dashboard import router as dashboard_router
from bff.echo import router as echo_router
from bff.runs import build_runs_router
from bff.settings import BffSettings
from pagi.app import create_app as create_service_app
from pagi.auth import TokenSigner, TokenVerifier, TrustStore
from pagi.http import create_service_client
from pagi.run_request import run_request_model

DOWNSTREAM_SERVICES = ("agent", "sandbox", "memory")


def create_app(settings: BffSettings) -> FastAPI:
    """The bff: echo, the dashboard fan-out, agent runs and the console; one client per service."""
    signer = TokenSigner.from_keys_dir(settings.keys_dir, "bff")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = {
            name: create_service_client(
                settings.url_of(name), name, signer, settings.request_timeout_seconds
            )
            for name in DOWNSTREAM_SERVICES
        }
        try:
            yield
        finally:
            for client in app.state.clients.values():
                await client.aclose()

    app = create_service_app("bff", lifespan=lifespan, metrics_token=settings.metrics_token())
    trust = TrustStore.from_keys_dir(settings.keys_dir)
    app.state.verifier = TokenVerifier("bff", trust)
    app.state.dashboard_requires_token = settings.pagi_bff_dashboard_require_token
    app.state.dashboard_prompt = settings.pagi_bff_dashboard_prompt
    app.state.timeout_seconds = settings.request_timeout_seconds
    app.include_router(echo_router)
    app.include_router(dashboard_router)
    app.include_router(build_runs_router(run_request_model(settings.run_ceilings)))
    install_console(app, settings, signer, trust)
    return app
