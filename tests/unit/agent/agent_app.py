"""An agent app in-process, its calls to the bff and memory at a given address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from agent.app import create_app
from agent.gateway_calls import PlanSource
from agent.settings import AgentSettings

ECHO = "/api/v1/echo"
MEMORY = "/api/v1/memory"
REQUEST_TIMEOUT = 0.5
GATEWAY_TIMEOUT = 0.3


@asynccontextmanager
async def agent_client(
    keys_dir: Path, gateway: PlanSource | None, **fields: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = AgentSettings(
        _env_file=None,
        pagi_keys_dir=keys_dir,
        request_timeout_seconds=REQUEST_TIMEOUT,
        model_gateway_grpc_timeout_seconds=GATEWAY_TIMEOUT,
        **fields,
    )
    app = create_app(settings, gateway=gateway)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
            yield http
