"""The agent as a real process with the real gateway, bff and memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pagi.stack import Stack
from testing.stack import REPO, LogCollector, free_port, launch_stack, stack_env

pytestmark = pytest.mark.e2e

SERVICES = ["gateway", "memory", "bff", "agent"]
GATEWAY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    env = stack_env(
        tmp_path_factory.mktemp("agent-e2e"),
        keys_dir,
        MODEL_GATEWAY_GRPC_TIMEOUT_SECONDS=str(GATEWAY_TIMEOUT),
    )
    running = launch_stack(env, SERVICES)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def agent_url(stack: Stack) -> str:
    return stack.settings.url_of("agent")


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('agent')}"}


def parse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_plan_is_planned_echoed_and_remembered(
    stack: Stack, agent_url: str, auth, token_for: Callable[..., str]
) -> None:
    prompt = "Back up the database, then verify the backup"
    response = httpx.post(
        f"{agent_url}/api/v1/plan",
        json={"prompt": prompt},
        headers={**auth, "X-Request-Id": "agent-e2e-1"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok", body
    assert len(body["plan"]) >= 2 and all(isinstance(s, str) and s for s in body["plan"])
    assert body["llm_response"]["backend"] == "local"
    assert body["llm_response"]["step_count"] == len(body["plan"])
    assert body["bff_echo"] == {
        "service": "bff",
        "received": {"ping": "agent", "request_id": "agent-e2e-1"},
        "request_id": "agent-e2e-1",
    }
    record_id = body["memory"]["record_id"]
    memory = httpx.get(
        f"{stack.settings.url_of('memory')}/api/v1/memory",
        params={"kind": "plan"},
        headers={"Authorization": f"Bearer {token_for('memory')}"},
    ).json()
    stored = next(r for r in memory["records"] if r["id"] == record_id)
    assert stored["content"]["prompt"] == prompt
    assert stored["content"]["steps"] == body["plan"]
    assert stored["content"]["requested_by"] == "operator"
    for service in ("gateway", "bff", "memory"):
        assert any("agent-e2e-1" in line for line in stack.logs.of(service)), service


def test_stream_yields_the_same_steps_as_plan(agent_url: str, auth) -> None:
    prompt = "Rotate the signing keys"
    plan = httpx.post(
        f"{agent_url}/api/v1/plan", json={"prompt": prompt}, headers=auth, timeout=10
    ).json()["plan"]
    with httpx.stream(
        "POST",
        f"{agent_url}/api/v1/plan/stream",
        json={"prompt": prompt},
        headers={**auth, "X-Request-Id": "agent-e2e-stream"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_events(response.read().decode())
    assert [name for name, _ in events] == ["step"] * len(plan) + ["done"]
    assert [data["step"] for _, data in events[:-1]] == plan
    assert events[-1][1] == {"steps": len(plan), "request_id": "agent-e2e-stream"}


@pytest.mark.parametrize("path", ["/api/v1/plan", "/api/v1/plan/stream"])
def test_plan_endpoints_refuse_bad_tokens(
    agent_url: str, token_for: Callable[..., str], path: str
) -> None:
    good = token_for("agent")
    for header in (
        None,
        "Bearer not-a-token",
        f"Bearer {token_for('bff')}",
        f"Bearer {good[:-4]}AAAA",
        f"Basic {good}",
    ):
        headers = {"Authorization": header} if header else {}
        response = httpx.post(f"{agent_url}{path}", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401, (header, response.text)
        assert response.json()["error"] == "unauthorized"


def test_memory_down_degrades_the_plan(stack: Stack, agent_url: str, auth) -> None:
    stack.stop_service("memory")
    try:
        body = httpx.post(
            f"{agent_url}/api/v1/plan", json={"prompt": "x y z"}, headers=auth, timeout=10
        ).json()
        assert body["status"] == "degraded"
        assert len(body["plan"]) >= 2
        assert body["memory"]["error"].startswith("memory is unreachable")
        assert body["bff_echo"]["service"] == "bff"
    finally:
        stack.start_service("memory")
        stack.wait_healthy("memory", timeout=30)


def test_frozen_gateway_is_504_at_the_deadline_and_recovers(
    stack: Stack, agent_url: str, auth
) -> None:
    gateway_pid = stack.processes["gateway"].process.pid
    os.kill(gateway_pid, signal.SIGSTOP)  # the port accepts, nothing answers
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{agent_url}/api/v1/plan", json={"prompt": "plan"}, headers=auth, timeout=15
        )
        elapsed = time.monotonic() - started
    finally:
        os.kill(gateway_pid, signal.SIGCONT)
    assert response.status_code == 504, response.text
    assert response.json()["error"] == "gateway_deadline_exceeded"
    assert GATEWAY_TIMEOUT <= elapsed < GATEWAY_TIMEOUT + 1.5
    again = httpx.post(
        f"{agent_url}/api/v1/plan", json={"prompt": "plan"}, headers=auth, timeout=10
    )
    assert again.status_code == 200, again.text


def test_gateway_down_is_502_and_recovers_without_restarting_the_agent(
    stack: Stack, agent_url: str, auth
) -> None:
    stack.stop_service("gateway")
    try:
        started = time.monotonic()
        response = httpx.post(
            f"{agent_url}/api/v1/plan", json={"prompt": "plan"}, headers=auth, timeout=15
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 502, response.text
        body = response.json()
        assert body["error"] == "gateway_unavailable"
        assert body["request_id"] == response.headers["x-request-id"]
        assert elapsed < stack.settings.model_gateway_grpc_timeout_seconds + 1.5
        streamed = httpx.post(
            f"{agent_url}/api/v1/plan/stream", json={"prompt": "plan"}, headers=auth, timeout=15
        )
        events = parse_events(streamed.text)
        assert [name for name, _ in events] == ["error"]
        assert events[0][1]["status_code"] == 502
    finally:
        stack.start_service("gateway")
        stack.wait_healthy("gateway", timeout=30)
    deadline = time.monotonic() + 10
    while True:
        again = httpx.post(
            f"{agent_url}/api/v1/plan", json={"prompt": "plan"}, headers=auth, timeout=10
        )
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the channel reconnects with back-off
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "ok"


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """An address that accepts connections and never answers (a hung model server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.parametrize(
    ("upstream", "status", "error"),
    [("dead", 502, "gateway_unavailable"), ("hung", 504, "gateway_deadline_exceeded")],
)
def test_model_server_failures_reach_the_client_as_clear_errors(
    tmp_path: Path,
    keys_dir: Path,
    auth,
    silent_upstream: str,
    upstream: str,
    status: int,
    error: str,
) -> None:
    base_url = silent_upstream if upstream == "hung" else f"http://127.0.0.1:{free_port()}/v1"
    env = stack_env(
        tmp_path,
        keys_dir,
        MODEL_BACKEND="openai",
        MODEL_BASE_URL=base_url,
        MODEL_API_KEY="sk-never-logged-4242",
        MODEL_GATEWAY_GRPC_TIMEOUT_SECONDS="1",
    )
    logs = LogCollector()
    stack = Stack(env=env, services=["gateway", "agent"], cwd=REPO, sink=logs)
    stack.start(timeout=60)
    try:
        url = stack.settings.url_of("agent")
        started = time.monotonic()
        response = httpx.post(f"{url}/api/v1/plan", json={"prompt": "x"}, headers=auth, timeout=10)
        elapsed = time.monotonic() - started
        streamed = httpx.post(
            f"{url}/api/v1/plan/stream", json={"prompt": "x"}, headers=auth, timeout=10
        )
    finally:
        stack.stop()
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert elapsed < 1 + 1.5
    events = parse_events(streamed.text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["status_code"] == status
    everything = "\n".join(line for _, line in logs.lines) + response.text + streamed.text
    assert "sk-never-logged-4242" not in everything
