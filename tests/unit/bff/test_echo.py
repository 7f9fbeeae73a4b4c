"""The bff echo: a wiring check that answers alone and needs a bff token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bff.app import create_app
from bff.settings import BffSettings
from testing.fake_downstream import FakeDownstream, serve


@pytest.fixture(scope="module")
def fake_world() -> Iterator[FakeDownstream]:
    fake = FakeDownstream()
    with serve(fake) as url:
        fake.url = url  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
async def client(keys_dir: Path, fake_world: FakeDownstream) -> AsyncIterator[httpx.AsyncClient]:
    url = fake_world.url  # type: ignore[attr-defined]
    settings = BffSettings(
        _env_file=None,
        pagi_keys_dir=keys_dir,
        py_agent_url=url,
        rust_sandbox_url=url,
        memory_url=url,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bff") as http:
            yield http


async def test_echo_returns_the_body_and_request_id_and_calls_nothing(
    client: httpx.AsyncClient, token_for, fake_world: FakeDownstream
) -> None:
    body = {"ping": "hello ✓", "request_id": "abc-1"}
    response = await client.post(
        "/api/v1/echo",
        json=body,
        headers={"Authorization": f"Bearer {token_for('bff', sub='agent')}", "X-Request-Id": "r-9"},
    )
    assert response.status_code == 200
    assert response.json() == {"service": "bff", "received": body, "request_id": "r-9"}
    assert response.headers["x-request-id"] == "r-9"
    assert fake_world.received == []


async def test_echo_without_request_id_in_body(client: httpx.AsyncClient, token_for) -> None:
    response = await client.post(
        "/api/v1/echo",
        json={"ping": "x"},
        headers={"Authorization": f"Bearer {token_for('bff')}"},
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["received"] == {"ping": "x", "request_id": None}
    assert answer["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("audience", [None, "agent", "memory"])
async def test_echo_needs_a_bff_token(client: httpx.AsyncClient, token_for, audience) -> None:
    headers = {"Authorization": f"Bearer {token_for(audience)}"} if audience else {}
    response = await client.post("/api/v1/echo", json={"ping": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "body", [{}, {"ping": 1}, {"ping": "x" * 5000}, {"ping": "x", "other": 1}, [], None]
)
async def test_echo_rejects_malformed_bodies(client: httpx.AsyncClient, token_for, body) -> None:
    response = await client.post(
        "/api/v1/echo", json=body, headers={"Authorization": f"Bearer {token_for('bff')}"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
