"""The gateway in `/metrics`: gRPC calls by method and code, model calls, tokens, HTTP port."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.conversation import ChatMessage, Conversation, conversation_to_proto
from gateway.main import start_metrics_server
from pagi.metric_catalogue import GATEWAY
from proto import model_gateway_pb2
from testing.gateway import RunningGateway, auth, gateway_settings
from testing.stack import free_port

DECIDE = "/pagi.gateway.v1.ModelGateway/Decide"
GET_PLAN = "/pagi.gateway.v1.ModelGateway/GetPlan"


def metric(name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(GATEWAY.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def test_calls_are_counted_by_method_and_code(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    ok = metric("pagi_grpc_requests_total", method=GET_PLAN, code="OK")
    refused = metric("pagi_grpc_requests_total", method=GET_PLAN, code="UNAUTHENTICATED")
    invalid = metric("pagi_grpc_requests_total", method=GET_PLAN, code="INVALID_ARGUMENT")
    plans = metric("pagi_gateway_model_calls_total", backend="local", rpc="GetPlan", outcome="ok")
    request = model_gateway_pb2.PlanRequest(prompt="Plan a release")
    await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway", sub="agent")))
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.stub.GetPlan(request, metadata=auth("forged"))
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.stub.GetPlan(
            model_gateway_pb2.PlanRequest(prompt="   "),
            metadata=auth(token_for("gateway", sub="agent")),
        )
    health = health_pb2_grpc.HealthStub(gateway.channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert metric("pagi_grpc_requests_total", method=GET_PLAN, code="OK") == ok + 1
    assert metric("pagi_grpc_requests_total", method=GET_PLAN, code="UNAUTHENTICATED") == (
        refused + 1
    )
    assert metric("pagi_grpc_requests_total", method=GET_PLAN, code="INVALID_ARGUMENT") == (
        invalid + 1
    )
    assert metric("pagi_grpc_requests_total", method="/grpc.health.v1.Health/Check", code="OK") >= 1
    assert metric("pagi_grpc_request_duration_seconds_count", method=GET_PLAN) >= 3
    assert (
        metric("pagi_gateway_model_calls_total", backend="local", rpc="GetPlan", outcome="ok")
        == plans + 1
    )


async def test_decisions_count_their_tokens(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    prompt = metric("pagi_gateway_model_tokens_total", backend="local", kind="prompt")
    completion = metric("pagi_gateway_model_tokens_total", backend="local", kind="completion")
    goal = "Run it:\n```python\nprint(6 * 7)\n```"
    request = conversation_to_proto(Conversation(messages=(ChatMessage("user", goal),)))
    answer = await gateway.stub.Decide(request, metadata=auth(token_for("gateway", sub="agent")))
    assert answer.usage.prompt_tokens > 0
    assert metric("pagi_gateway_model_tokens_total", backend="local", kind="prompt") == (
        prompt + answer.usage.prompt_tokens
    )
    assert metric("pagi_gateway_model_tokens_total", backend="local", kind="completion") == (
        completion + answer.usage.completion_tokens
    )
    assert metric("pagi_grpc_requests_total", method=DECIDE, code="OK") >= 1


async def test_the_gateway_serves_metrics_over_http(
    gateway: RunningGateway, keys_dir: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "scrape-token"
    token_file.write_text("tok-1\n")
    settings = gateway_settings(
        keys_dir, pagi_gateway_metrics_port=0, pagi_metrics_token_file=token_file
    )
    assert await start_metrics_server(settings) is None  # port 0 in the settings: off
    side = await start_metrics_server(
        gateway_settings(
            keys_dir, pagi_metrics_token_file=token_file, pagi_gateway_metrics_port=free_port()
        )
    )
    assert side is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{side.port}") as client:
            refused = await client.get("/metrics")
            scraped = await client.get("/metrics", headers={"Authorization": "Bearer tok-1"})
            health = await client.get("/health")
    finally:
        await side.stop()
    assert refused.status_code == 401
    assert scraped.status_code == 200
    assert "pagi_grpc_requests_total" in scraped.text
    assert "pagi_gateway_model_calls_total" in scraped.text
    assert health.json()["service"] == "gateway"


async def test_a_taken_metrics_port_is_a_clear_start_failure(keys_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="cannot listen"):
            await start_metrics_server(gateway_settings(keys_dir, pagi_gateway_metrics_port=port))
