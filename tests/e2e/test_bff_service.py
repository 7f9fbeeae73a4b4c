"""The bff as a real process: dashboard-data over real services, one failing at a time."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pagi import SERVICES
from pagi.stack import Stack
from testing.stack import free_port, launch_stack, stack_env

pytestmark = pytest.mark.e2e

TIMEOUT = 1.0
# The real stack shares two cores with whatever else runs: a roomier deadline
# keeps a busy moment from reading as a failed service.
FULL_STACK_TIMEOUT = 3.0
DASHBOARD = "/api/v1/agi/dashboard-data"


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    env = stack_env(
        tmp_path_factory.mktemp("bff-e2e"),
        keys_dir,
        REQUEST_TIMEOUT_SECONDS=str(FULL_STACK_TIMEOUT),
    )
    running = launch_stack(env, list(SERVICES))
    yield running
    running.stop()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A URL whose server accepts connections and never answers (a stalled service)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def get_dashboard(url: str) -> tuple[dict, float]:
    started = time.monotonic()
    response = httpx.get(f"{url}{DASHBOARD}", timeout=FULL_STACK_TIMEOUT + 10)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - started


def test_dashboard_all_ok_over_the_real_stack(full_stack: Stack) -> None:
    body, _ = get_dashboard(full_stack.settings.url_of("bff"))
    assert body["status"] == "ok", body
    assert body["failed_services"] == []
    data = body["data"]
    assert data["python_agent"]["service"] == "agent"
    assert data["python_agent"]["status"] == "ok"
    assert len(data["python_agent"]["plan"]) >= 2
    assert data["rust_sandbox"]["tool_status"] == "ok"
    assert data["memory"]["service"] == "memory"
    assert "record" in data["memory"]


def test_dashboard_names_a_stopped_memory_and_recovers(
    full_stack: Stack, token_for: Callable[..., str]
) -> None:
    bff = full_stack.settings.url_of("bff")
    full_stack.stop_service("memory")
    try:
        body, elapsed = get_dashboard(bff)
        assert body["status"] == "degraded"
        assert body["failed_services"] == ["memory"]
        assert body["data"]["memory"]["error"].startswith("memory is unreachable")
        # The agent still plans; it reports that it could not store the plan.
        assert body["data"]["python_agent"]["status"] == "degraded"
        assert "error" in body["data"]["python_agent"]["memory"]
        assert body["data"]["rust_sandbox"]["tool_status"] == "ok"
        assert elapsed < FULL_STACK_TIMEOUT + 1.5
    finally:
        full_stack.start_service("memory")
        full_stack.wait_healthy("memory", timeout=30)
    body, _ = get_dashboard(bff)
    assert body["status"] == "ok", body


def test_dashboard_names_a_frozen_memory_within_the_timeout_and_recovers(
    full_stack: Stack,
) -> None:
    bff = full_stack.settings.url_of("bff")
    memory_pid = full_stack.processes["memory"].process.pid
    os.kill(memory_pid, signal.SIGSTOP)  # connections are accepted, nothing is answered
    try:
        body, elapsed = get_dashboard(bff)
    finally:
        os.kill(memory_pid, signal.SIGCONT)
    assert body["status"] == "degraded"
    # Only memory is named: the agent answers in time, reporting the write it could not make.
    assert body["failed_services"] == ["memory"]
    assert body["data"]["memory"]["error"] == (
        f"memory did not answer within {FULL_STACK_TIMEOUT:g}s"
    )
    assert body["data"]["python_agent"]["status"] == "degraded"
    assert "did not answer" in body["data"]["python_agent"]["memory"]["error"]
    assert FULL_STACK_TIMEOUT <= elapsed < FULL_STACK_TIMEOUT + 1.5
    recovered, _ = get_dashboard(bff)
    assert recovered["status"] == "ok", recovered


def test_dashboard_names_a_frozen_agent_within_the_timeout_and_recovers(
    full_stack: Stack,
) -> None:
    bff = full_stack.settings.url_of("bff")
    agent_pid = full_stack.processes["agent"].process.pid
    os.kill(agent_pid, signal.SIGSTOP)
    try:
        body, elapsed = get_dashboard(bff)
    finally:
        os.kill(agent_pid, signal.SIGCONT)
    assert body["status"] == "degraded"
    assert body["failed_services"] == ["agent"]
    assert body["data"]["python_agent"]["error"] == (
        f"agent did not answer within {FULL_STACK_TIMEOUT:g}s"
    )
    assert body["data"]["rust_sandbox"]["tool_status"] == "ok"
    assert body["data"]["memory"]["service"] == "memory"
    assert FULL_STACK_TIMEOUT <= elapsed < FULL_STACK_TIMEOUT + 1.5
    recovered, _ = get_dashboard(bff)
    assert recovered["status"] == "ok", recovered


def test_dashboard_cuts_a_stalled_sandbox_at_the_timeout(
    tmp_path: Path, keys_dir: Path, silent_listener: str
) -> None:
    env = stack_env(
        tmp_path, keys_dir, REQUEST_TIMEOUT_SECONDS=str(TIMEOUT), RUST_SANDBOX_URL=silent_listener
    )
    stack = launch_stack(env, ["gateway", "memory", "agent", "bff"])
    try:
        body, elapsed = get_dashboard(stack.settings.url_of("bff"))
    finally:
        stack.stop()
    assert body["status"] == "degraded"
    assert body["failed_services"] == ["sandbox"]
    assert body["data"]["rust_sandbox"]["error"] == f"sandbox did not answer within {TIMEOUT:g}s"
    assert body["data"]["python_agent"]["status"] == "ok"
    assert "error" not in body["data"]["memory"]
    assert TIMEOUT <= elapsed < TIMEOUT + 1.5


def test_dashboard_can_require_a_token(
    tmp_path: Path, keys_dir: Path, token_for: Callable[..., str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = stack_env(
        tmp_path,
        keys_dir,
        PAGI_BFF_DASHBOARD_REQUIRE_TOKEN="true",
        PY_AGENT_URL=closed,
        RUST_SANDBOX_URL=closed,
        MEMORY_URL=closed,
    )
    stack = launch_stack(env, ["bff"])
    try:
        url = f"{stack.settings.url_of('bff')}{DASHBOARD}"
        refused = httpx.get(url)
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        allowed = httpx.get(url, headers={"Authorization": f"Bearer {token_for('bff')}"})
        assert allowed.status_code == 200
        assert allowed.json()["failed_services"] == ["agent", "sandbox", "memory"]
    finally:
        stack.stop()
