"""An agent app wired to a fake gateway and a real loopback server as bff and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from testing.fake_downstream import Behaviour, FakeDownstream, serve
from tests.unit.agent.agent_app import ECHO, MEMORY, agent_client
from tests.unit.agent.fake_gateway import FakeGateway


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
