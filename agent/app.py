"""The agent application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent.gateway_calls import PlanSource
from agent.plans import router as plans_router
from agent.settings import AgentSettings
from gateway.client import GatewayClient
from pagi.app import create_app as create_service_app
from pagi.auth import TokenSigner, TokenVerifier, TrustStore
from pagi.http import create_service_client


def create_app(settings: AgentSettings, gateway: PlanSource | None = None) -> FastAPI:
    """The agent; ``gateway`` replaces the real gRPC client (tests)."""
    signer = TokenSigner.from_keys_dir(settings.keys_dir, "agent")
    plan_source: PlanSource = gateway or GatewayClient(
        settings.gateway_target, signer, settings.model_gateway_grpc_timeout_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = {
            name: create_service_client(
                settings.url_of(name), name, signer, settings.wiring_timeout_seconds
            )
            for name in ("bff", "memory")
        }
        try:
            yield
        finally:
            for client in app.state.clients.values():
                await client.aclose()
            await plan_source.close()

    app = create_service_app(
        "agent", lifespan=lifespan, max_body_bytes=settings.pagi_agent_max_body_bytes
    )
    app.state.verifier = TokenVerifier("agent", TrustStore.from_keys_dir(settings.keys_dir))
    app.state.gateway = plan_source
    app.state.gateway_timeout_seconds = settings.model_gateway_grpc_timeout_seconds
    app.state.wiring_timeout_seconds = settings.wiring_timeout_seconds
    app.include_router(plans_router)
    return app
