"""An agent app wired to a fake gateway and a real loopback server as bff and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app import create_app
from agent.gateway_calls import PlanSource
from agent.settings import AgentSettings
from testing.fake_downstream import Behaviour, FakeDownstream, serve
from tests.unit.agent.fake_gateway import FakeGateway

ECHO = "/api/v1/echo"
MEMORY = "/api/v1/memory"
REQUEST_TIMEOUT = 0.5
GATEWAY_TIMEOUT = 0.3


@pytest.fixture(scope="package")
def downstream_server() -> Iterator[tuple[FakeDownstream, str]]:
    fake = FakeDownstream()
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def downstream(downstream_server: tuple[FakeDownstream, str]) -> FakeDownstream:
    fake, _ = downstream_server
    fake.received = []
    fake.behaviours = {
        ECHO: Behaviour(body={"service": "bff", "received": {"ping": "agent"}, "request_id": "x"}),
        MEMORY: Behaviour(
            status=201,
            body={
                "service": "memory",
                "id": "17",
                "kind": "plan",
                "content": {},
                "created_at": "2026-01-01T00:00:00+00:00",
            },
        ),
    }
    return fake


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


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def client(
    keys_dir: Path,
    gateway: FakeGateway,
    downstream: FakeDownstream,
    downstream_server: tuple[FakeDownstream, str],
) -> AsyncIterator[httpx.AsyncClient]:
    _, url = downstream_server
    async with agent_client(keys_dir, gateway, go_bff_url=url, memory_url=url) as http:
        yield http


@pytest.fixture
def auth(token_for) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('agent')}"}
