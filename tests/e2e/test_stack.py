"""The whole stack as real processes on loopback, driven through every contract endpoint.

This is what a new user does after `make run`: health of all five, the
gateway's gRPC health and reflection, echo, plan, execute_tool, memory,
dashboard-data — then forged tokens, and one service down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pagi.settings import CommonSettings
from pagi.stack import Stack
from testing.stack import launch_stack, stack_env

pytestmark = pytest.mark.e2e

HTTP_SERVICES = ("agent", "sandbox", "bff", "memory")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    running = launch_stack(stack_env(tmp_path_factory.mktemp("stack"), keys_dir))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def settings(stack: Stack) -> CommonSettings:
    return stack.settings


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_health(settings: CommonSettings, service: str) -> None:
    response = httpx.get(f"{settings.url_of(service)}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == service
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and body["version"]


def test_sandbox_health_reports_isolation(settings: CommonSettings) -> None:
    isolation = httpx.get(f"{settings.url_of('sandbox')}/health").json()["isolation"]
    assert isolation, "the sandbox must report which isolation layers are active"


def test_gateway_grpc_health_and_reflection(settings: CommonSettings) -> None:
    with grpc.insecure_channel(settings.gateway_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
        )
        names = [s.name for reply in replies for s in reply.list_services_response.service]
    assert any(name.endswith("ModelGateway") for name in names), names


def test_echo_returns_what_it_received(settings: CommonSettings, token_for: Callable) -> None:
    body = {"ping": "pong", "request_id": "rid-echo-1"}
    response = httpx.post(
        f"{settings.url_of('bff')}/api/v1/echo",
        json=body,
        headers={**auth(token_for("bff", sub="agent")), "X-Request-Id": "rid-echo-1"},
    )
    assert response.status_code == 200
    answer = response.json()
    assert answer["service"] == "bff"
    assert answer["received"] == body
    assert answer["request_id"] == "rid-echo-1"
    assert response.headers["x-request-id"] == "rid-echo-1"


def test_plan_end_to_end(stack: Stack, settings: CommonSettings, token_for: Callable) -> None:
    response = httpx.post(
        f"{settings.url_of('agent')}/api/v1/plan",
        json={"prompt": "Summarise the latest memory and run the demo tool"},
        headers={**auth(token_for("agent")), "X-Request-Id": "rid-plan-e2e"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["service"] == "agent"
    assert body["status"] == "ok"
    assert isinstance(body["plan"], list) and len(body["plan"]) >= 2
    assert body["llm_response"]
    assert body["bff_echo"]["service"] == "bff"
    # The request id travelled agent → gateway and agent → bff.
    assert any("rid-plan-e2e" in line for line in stack.logs.of("gateway"))
    assert any("rid-plan-e2e" in line for line in stack.logs.of("bff"))


def test_execute_tool_demo_and_python(settings: CommonSettings, token_for: Callable) -> None:
    url = f"{settings.url_of('sandbox')}/api/v1/execute_tool"
    headers = auth(token_for("sandbox"))
    demo = httpx.post(url, json={"tool_name": "demo"}, headers=headers, timeout=10)
    assert demo.status_code == 200, demo.text
    assert demo.json()["tool_status"] == "ok"
    assert demo.json()["result"]["stdout"]
    python = httpx.post(
        url, json={"tool_name": "python", "code": "print(2+2)"}, headers=headers, timeout=10
    )
    assert python.status_code == 200, python.text
    assert python.json()["result"]["stdout"] == "4\n"
    assert python.json()["result"]["exit_code"] == 0


def test_execute_tool_unknown_tool_is_404(settings: CommonSettings, token_for: Callable) -> None:
    response = httpx.post(
        f"{settings.url_of('sandbox')}/api/v1/execute_tool",
        json={"tool_name": "no-such-tool"},
        headers=auth(token_for("sandbox")),
    )
    assert response.status_code == 404
    assert response.json()["error"]


def test_memory_write_read_and_survive_restart(
    stack: Stack, settings: CommonSettings, token_for: Callable
) -> None:
    url = settings.url_of("memory")
    headers = auth(token_for("memory"))
    written = httpx.post(
        f"{url}/api/v1/memory",
        json={"kind": "note", "content": {"text": "remember me", "n": 7}},
        headers=headers,
    )
    assert written.status_code in (200, 201), written.text
    record = written.json()
    latest = httpx.get(f"{url}/memory/latest", headers=headers).json()
    assert json.dumps(record["content"], sort_keys=True) in json.dumps(latest, sort_keys=True)

    stack.stop_service("memory")
    stack.start_service("memory")
    stack.wait_healthy("memory", timeout=30)
    listed = httpx.get(f"{url}/api/v1/memory", params={"limit": 50}, headers=headers)
    assert listed.status_code == 200
    assert record["id"] in json.dumps(listed.json())


def test_dashboard_data_all_ok(settings: CommonSettings) -> None:
    response = httpx.get(
        f"{settings.url_of('bff')}/api/v1/agi/dashboard-data",
        headers={"X-Request-Id": "rid-dash"},
        timeout=10,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "bff"
    assert body["status"] == "ok", body
    assert body["request_id"] == "rid-dash"
    assert set(body["data"]) == {"python_agent", "rust_sandbox", "memory"}
    for value in body["data"].values():
        assert "error" not in value


FORGED = {
    "missing": None,
    "garbage": "Bearer not-a-token",
    "alg-none": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJvcGVyYXRvciJ9.",
}

PROTECTED = [
    ("agent", "POST", "/api/v1/plan", {"prompt": "x"}),
    ("sandbox", "POST", "/api/v1/execute_tool", {"tool_name": "demo"}),
    ("memory", "GET", "/memory/latest", None),
    ("memory", "POST", "/api/v1/memory", {"kind": "note", "content": 1}),
    ("bff", "POST", "/api/v1/echo", {"ping": "x", "request_id": "y"}),
]


@pytest.mark.parametrize(("service", "method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("kind", [*FORGED, "wrong-audience", "bad-signature"])
def test_protected_endpoints_refuse_bad_tokens(
    settings: CommonSettings,
    token_for: Callable,
    service: str,
    method: str,
    path: str,
    body: dict | None,
    kind: str,
) -> None:
    if kind == "wrong-audience":
        header = f"Bearer {token_for('gateway' if service != 'gateway' else 'agent')}"
    elif kind == "bad-signature":
        good = token_for("nobody")
        header = f"Bearer {good[:-4]}AAAA"
    else:
        header = FORGED[kind]
    headers = {"Authorization": header} if header else {}
    response = httpx.request(
        method, f"{settings.url_of(service)}{path}", json=body, headers=headers
    )
    assert response.status_code == 401, (service, path, kind, response.text)
    assert response.json()["error"] == "unauthorized"


def test_gateway_refuses_bad_tokens(settings: CommonSettings, token_for: Callable) -> None:
    from proto import model_gateway_pb2, model_gateway_pb2_grpc

    with grpc.insecure_channel(settings.gateway_target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        request = model_gateway_pb2.PlanRequest(prompt="hello")
        for metadata in ((), (("authorization", f"Bearer {token_for('agent')}"),)):
            with pytest.raises(grpc.RpcError) as failure:
                stub.GetPlan(request, metadata=metadata, timeout=2)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = stub.GetPlan(
            request, metadata=(("authorization", f"Bearer {token_for('gateway')}"),), timeout=5
        )
        assert len(good.steps) >= 2


def test_dashboard_degrades_when_a_service_is_down(stack: Stack, settings: CommonSettings) -> None:
    stack.stop_service("sandbox")
    try:
        started = time.monotonic()
        response = httpx.get(f"{settings.url_of('bff')}/api/v1/agi/dashboard-data", timeout=10)
        elapsed = time.monotonic() - started
        body = response.json()
        assert response.status_code == 200
        assert body["status"] == "degraded"
        assert "error" in body["data"]["rust_sandbox"]
        assert "error" not in body["data"]["memory"]
        assert elapsed < settings.request_timeout_seconds + 1.5
    finally:
        stack.start_service("sandbox")
        stack.wait_healthy("sandbox", timeout=30)
    recovered = httpx.get(f"{settings.url_of('bff')}/api/v1/agi/dashboard-data", timeout=10)
    assert recovered.json()["status"] == "ok"
