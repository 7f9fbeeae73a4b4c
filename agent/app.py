"""The agent application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent.gateway_calls import ModelGateway
from agent.plans import router as plans_router
from agent.run_service import RunService
from agent.run_store import RunStore
from agent.runs import build_runs_router
from agent.sandbox_calls import SandboxCalls, ToolSandbox
from agent.settings import AgentSettings
from gateway.client import GatewayClient
from pagi import metric_catalogue as metrics
from pagi.app import create_app as create_service_app
from pagi.auth import ACTS_FOR_PEOPLE, TokenSigner, TokenVerifier, TrustStore
from pagi.disconnect import CancelOnDisconnect
from pagi.http import create_service_client
from pagi.run_request import run_request_model


def create_app(
    settings: AgentSettings,
    gateway: ModelGateway | None = None,
    sandbox: ToolSandbox | None = None,
) -> FastAPI:
    """The agent; ``gateway`` and ``sandbox`` replace the real clients (tests)."""
    signer = TokenSigner.from_keys_dir(settings.keys_dir, "agent")
    model_gateway: ModelGateway = gateway or GatewayClient(
        settings.gateway_target, signer, settings.model_gateway_grpc_timeout_seconds
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = {
            name: create_service_client(
                settings.url_of(name), name, signer, settings.wiring_timeout_seconds
            )
            for name in ("bff", "memory", "sandbox")
        }
        clients = app.state.clients
        app.state.runs = RunService(
            settings,
            model_gateway,
            sandbox or SandboxCalls(clients["sandbox"]),
            RunStore(
                clients["memory"],
                settings.request_timeout_seconds,
                settings.pagi_agent_max_run_document_bytes,
            ),
        )
        runs = app.state.runs
        metrics.AGENT.refresh_on_scrape(
            "agent", lambda: metrics.AGENT_RUNS_IN_PROGRESS.labels().set(len(runs.active))
        )
        try:
            yield
        finally:
            await app.state.runs.shutdown()
            for client in app.state.clients.values():
                await client.aclose()
            await model_gateway.close()

    app = create_service_app(
        "agent",
        lifespan=lifespan,
        max_body_bytes=settings.pagi_agent_max_body_bytes,
        metrics_token=settings.metrics_token(),
    )
    app.state.verifier = TokenVerifier(
        "agent", TrustStore.from_keys_dir(settings.keys_dir), delegators=ACTS_FOR_PEOPLE
    )
    app.state.operators = settings.operators
    app.state.gateway = model_gateway
    app.state.gateway_timeout_seconds = settings.model_gateway_grpc_timeout_seconds
    app.state.wiring_timeout_seconds = settings.wiring_timeout_seconds
    app.include_router(plans_router)
    app.include_router(build_runs_router(run_request_model(settings.run_ceilings)))
    # A client that hangs up cancels its run (the stream route does this itself).
    app.add_middleware(CancelOnDisconnect, paths={"/api/v1/runs"})
    return app
