"""``POST /api/v1/agi/runs/stream``: the agent's events relayed, its refusals passed on."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from bff.app import create_app
from bff.settings import BffSettings
from pagi.auth import TokenVerifier, TrustStore
from pagi.sse import sse_event
from testing.fake_downstream import closed_port_url, serve
from testing.stack import free_port

STREAM = "/api/v1/agi/runs/stream"


class FakeAgent:
    """Streams run events, refuses, or breaks off, as ``mode`` says; records what it saw."""

    def __init__(self) -> None:
        self.mode = "events"
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.closed = threading.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.mode == "busy":
            response: Any = JSONResponse(
                {"error": "too_many_runs", "detail": "16 runs"}, 429, {"Retry-After": "1"}
            )
        elif self.mode == "invalid":
            response = JSONResponse({"error": "invalid_request", "detail": []}, 422)
        else:
            response = StreamingResponse(self._events(), media_type="text/event-stream")
        await response(scope, receive, send)

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            yield sse_event("run.started", {"run_id": "run_1"}, event_id=1)
            yield sse_event("tool.call", {"tool": "python"}, event_id=2)
            if self.mode == "broken":
                raise RuntimeError("agent died")
            if self.mode == "endless":
                while True:
                    await asyncio.sleep(0.05)
                    yield b": keep-alive\n\n"
            yield sse_event("run.completed", {"status": "completed"}, event_id=3)
        finally:
            self.closed.set()


@pytest.fixture(scope="module")
def agent_server() -> Iterator[tuple[FakeAgent, str]]:
    fake = FakeAgent()
    with serve(fake) as url:  # type: ignore[arg-type]
        yield fake, url


@pytest.fixture
def agent(agent_server: tuple[FakeAgent, str]) -> FakeAgent:
    fake, _ = agent_server
    fake.mode = "events"
    fake.bodies.clear()
    fake.headers.clear()
    fake.closed.clear()
    return fake


@pytest.fixture
async def client(
    keys_dir: Path, agent_server: tuple[FakeAgent, str]
) -> AsyncIterator[httpx.AsyncClient]:
    _, url = agent_server
    settings = BffSettings(
        _env_file=None, pagi_keys_dir=keys_dir, request_timeout_seconds=1.0, py_agent_url=url
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bff") as http:
            yield http


@pytest.fixture
def auth(token_for) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('bff')}", "X-Request-Id": "front-1"}


def events(text: str) -> list[tuple[str, dict]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def test_events_are_relayed_and_the_agent_is_called_as_the_bff(
    client: httpx.AsyncClient, agent: FakeAgent, auth, trust: TrustStore
) -> None:
    body = {"goal": "add 2 and 2", "budgets": {"max_steps": 2}}
    response = await client.post(STREAM, json=body, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "id: 1\nevent: run.started" in response.text
    assert [e for e, _ in events(response.text)] == ["run.started", "tool.call", "run.completed"]
    assert agent.bodies == [body]
    token = agent.headers[0]["authorization"].removeprefix("Bearer ")
    assert TokenVerifier("agent", trust).verify(token).subject == "bff"
    assert agent.headers[0]["x-request-id"] == "front-1"


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [("busy", 429, "too_many_runs"), ("invalid", 422, "invalid_request")],
)
async def test_the_agents_refusals_come_back_as_they_are(
    client: httpx.AsyncClient, agent: FakeAgent, auth, mode: str, status: int, error: str
) -> None:
    agent.mode = mode
    response = await client.post(STREAM, json={"goal": "x"}, headers=auth)
    assert response.status_code == status and response.json()["error"] == error
    if status == 429:
        assert response.headers["retry-after"] == "1"


async def test_an_agent_breaking_off_ends_the_stream_with_an_error_event(
    client: httpx.AsyncClient, agent: FakeAgent, auth
) -> None:
    agent.mode = "broken"
    response = await client.post(STREAM, json={"goal": "x"}, headers=auth)
    kinds = [e for e, _ in events(response.text)]
    assert kinds[:2] == ["run.started", "tool.call"]
    assert kinds[-1] == "error" and events(response.text)[-1][1]["request_id"] == "front-1"


async def test_a_frontend_leaving_closes_the_call_to_the_agent(
    keys_dir: Path, agent_server: tuple[FakeAgent, str], agent: FakeAgent, auth
) -> None:
    # Under a real server: the in-process transport would wait for the endless body.
    agent.mode = "endless"
    _, agent_url = agent_server
    settings = BffSettings(
        _env_file=None, pagi_keys_dir=keys_dir, request_timeout_seconds=1.0, py_agent_url=agent_url
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with http.stream("POST", STREAM, json={"goal": "x"}, headers=auth) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: tool.call"):
                        break
        assert await asyncio.to_thread(agent.closed.wait, 5), "the agent's stream was left open"
    finally:
        server.should_exit = True
        await serving


async def test_bad_requests_never_reach_the_agent(
    client: httpx.AsyncClient, agent: FakeAgent, auth
) -> None:
    for body in (
        {},
        {"goal": ""},
        {"goal": "x", "extra": 1},
        {"goal": "x", "budgets": {"max_steps": 0}},
    ):
        response = await client.post(STREAM, json=body, headers=auth)
        assert response.status_code == 422, body
    assert (await client.post(STREAM, json={"goal": "x"})).status_code == 401
    assert agent.bodies == []


async def test_an_agent_that_is_down_is_a_502(keys_dir: Path, auth) -> None:
    settings = BffSettings(
        _env_file=None,
        pagi_keys_dir=keys_dir,
        request_timeout_seconds=0.5,
        py_agent_url=closed_port_url(),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bff") as http:
            response = await http.post(STREAM, json={"goal": "x"}, headers=auth)
    assert response.status_code == 502 and response.json()["error"] == "agent_unavailable"
