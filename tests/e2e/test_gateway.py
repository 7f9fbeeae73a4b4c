"""The gateway as a real process: local and OpenAI-compatible backends, statuses, logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.client import GatewayClient, GatewayError
from pagi.auth import TokenSigner
from pagi.health import check_service
from pagi.stack import Stack
from proto import model_gateway_pb2, model_gateway_pb2_grpc
from testing.fake_openai import PLAN_STEPS, FakeOpenAI
from testing.stack import REPO, closed_port, free_port

pytestmark = pytest.mark.e2e

API_KEY = "sk-e2e-4d1c-NEVER-PRINT-ME"
PROMPT = "Summarise the latest memory and run the demo tool"


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """An OpenAI-compatible server on loopback, in the test's event loop."""
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


async def expect(call: object, code: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code == code, caught.value.message
    return caught.value


async def test_local_gateway_process(start_stack: Callable[..., Stack], keys_dir: Path) -> None:
    stack = start_stack(["gateway"])
    settings = stack.settings
    assert check_service("gateway", settings)["status"] == "SERVING"

    channel = grpc.aio.insecure_channel(settings.gateway_target)
    try:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
        )
        names = {s.name async for r in replies for s in r.list_services_response.service}
        assert "pagi.gateway.v1.ModelGateway" in names

        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetPlan(model_gateway_pb2.PlanRequest(prompt=PROMPT), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        operator = TokenSigner.from_keys_dir(keys_dir, "operator").sign("gateway")
        metrics = await stub.GetMetrics(
            model_gateway_pb2.MetricsRequest(),
            metadata=(("authorization", f"Bearer {operator}"),),
            timeout=2,
        )
        assert [b.backend for b in metrics.backends] == ["local"]
    finally:
        await channel.close()

    client = GatewayClient(settings.gateway_target, TokenSigner.from_keys_dir(keys_dir, "agent"), 5)
    try:
        plan = await client.get_plan(PROMPT)
        assert len(plan.steps) >= 3 and plan.backend == "local"
        streamed = [chunk async for chunk in client.stream_plan(PROMPT)]
        assert [c.step for c in streamed[:-1]] == plan.steps and streamed[-1].done
    finally:
        await client.close()

    process = stack.processes["gateway"].process
    stack.stop_service("gateway")
    assert process.returncode == 0  # SIGTERM stops it cleanly
    lines = stack.logs.of("gateway")  # type: ignore[attr-defined]
    assert any('"gateway_stopped"' in line for line in lines)
    assert not any("Traceback" in line for line in lines)


async def test_openai_backend_process(
    start_stack: Callable[..., Stack], keys_dir: Path, fake_openai: FakeOpenAI
) -> None:
    stack = start_stack(
        ["gateway"],
        MODEL_BACKEND="openai",
        MODEL_BASE_URL=fake_openai.url("dynamic"),
        MODEL_NAME="fake-model",
        MODEL_API_KEY=API_KEY,
        LOG_LEVEL="debug",
    )
    client = GatewayClient(
        stack.settings.gateway_target, TokenSigner.from_keys_dir(keys_dir, "agent"), 3
    )
    try:
        plan = await client.get_plan(PROMPT)
        assert plan.steps == [f"{n}. {s}" for n, s in enumerate(PLAN_STEPS, start=1)]
        assert (plan.backend, plan.model) == ("openai", "fake-model")
        assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"
        streamed = [chunk async for chunk in client.stream_plan(PROMPT)]
        assert [c.step for c in streamed[:-1]] == plan.steps

        for mode, code in (
            ("unauthorized", "failed_precondition"),
            ("down", "unavailable"),
            ("garbage", "internal"),
            ("slow", "deadline_exceeded"),
        ):
            fake_openai.mode = mode
            error = await expect(client.get_plan(PROMPT), code)
            assert API_KEY not in error.message
    finally:
        await client.close()
    stack.stop_service("gateway")
    output = "\n".join(stack.logs.of("gateway"))  # type: ignore[attr-defined]
    assert '"upstream_attempt_failed"' in output and '"api_key_set": true' in output
    assert API_KEY not in output


async def test_dead_model_server_gives_unavailable_and_the_gateway_stays_up(
    start_stack: Callable[..., Stack], keys_dir: Path
) -> None:
    stack = start_stack(
        ["gateway"],
        MODEL_BACKEND="openai",
        MODEL_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1",
        MODEL_API_KEY=API_KEY,
    )
    client = GatewayClient(
        stack.settings.gateway_target, TokenSigner.from_keys_dir(keys_dir, "agent"), 5
    )
    try:
        error = await expect(client.get_plan(PROMPT), "unavailable")
        assert "unreachable" in error.message
    finally:
        await client.close()
    with grpc.insecure_channel(stack.settings.gateway_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def run_gateway(tmp_path: Path, keys_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PAGI_STATE_DIR": str(tmp_path),
        "PAGI_KEYS_DIR": str(keys_dir),
        "MODEL_GATEWAY_GRPC_PORT": str(free_port()),
        "PAGI_GATEWAY_METRICS_PORT": str(free_port()),
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        ({"MODEL_BACKEND": "llama"}, 2, "MODEL_BACKEND: Input should be 'local' or 'openai'"),
        ({"MODEL_BASE_URL": "ftp://x/v1", "MODEL_API_KEY": "sk-hide"}, 2, "must start with http"),
        (
            {"MODEL_BACKEND": "openai", "MODEL_API_KEY_FILE": "/nonexistent/key"},
            1,
            "cannot read MODEL_API_KEY_FILE",
        ),
    ],
    ids=["unknown-backend", "bad-url", "missing-key-file"],
)
def test_bad_configuration_fails_fast_with_a_clear_message(
    tmp_path: Path, keys_dir: Path, env: dict[str, str], code: int, message: str
) -> None:
    result = run_gateway(tmp_path, keys_dir, **env)
    assert result.returncode == code
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output and "sk-hide" not in output


def test_a_port_in_use_fails_fast(tmp_path: Path, keys_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_gateway(tmp_path, keys_dir, MODEL_GATEWAY_GRPC_PORT=str(port))
    assert result.returncode == 1
    assert "cannot listen" in result.stdout and "Traceback" not in result.stdout + result.stderr
