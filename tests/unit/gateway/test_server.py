"""The gateway's gRPC server over real grpc.aio on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.backends.base import BackendError, Deadline, ErrorCode, PlanBackend
from gateway.backends.openai import OpenAIBackend
from proto import model_gateway_pb2
from testing.fake_openai import PLAN_STEPS, FakeOpenAI
from testing.forged_tokens import AttackerKeys, forged_tokens
from testing.gateway import RunningGateway, auth, serve_gateway
from tests.unit.gateway.fake_backends import BlockingBackend, BrokenBackend

GET_PLAN = "/pagi.gateway.v1.ModelGateway/GetPlan"
PROMPT = "Write a Python script that parses nginx logs"


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = await call  # type: ignore[misc]
        if hasattr(result, "__aiter__"):
            [_ async for _ in result]
    return caught.value


async def stream_error(call: grpc.aio.UnaryStreamCall) -> tuple[list, grpc.aio.AioRpcError]:
    chunks = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in call:
            chunks.append(chunk)
    return chunks, caught.value


# ---------------------------------------------------------------------- open services


async def test_health_is_serving_without_a_token(gateway: RunningGateway) -> None:
    stub = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "pagi.gateway.v1.ModelGateway"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_gateway_without_a_token(gateway: RunningGateway) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="pagi.gateway.v1.ModelGateway"
        ),
    ]
    replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests), timeout=2)]
    names = {service.name for service in replies[0].list_services_response.service}
    assert {"pagi.gateway.v1.ModelGateway", "grpc.health.v1.Health"} <= names
    proto_file = descriptor_pb2.FileDescriptorProto.FromString(
        replies[1].file_descriptor_response.file_descriptor_proto[0]
    )
    methods = {m.name for m in proto_file.service[0].method}
    assert methods == {"GetPlan", "StreamPlan", "GetMetrics", "Decide"}


# ---------------------------------------------------------------------- authentication

SOFT_METADATA_LIMIT = 8 * 1024
OTHER_METADATA_BYTES = 1024
"""A call's metadata besides its token: method, scheme, user agent, timeout (~600 bytes)."""


async def test_every_forged_token_is_unauthenticated(
    gateway: RunningGateway, keys_dir: Path
) -> None:
    forgeries = forged_tokens(keys_dir, "gateway", "sandbox", AttackerKeys())
    described = {what for what, _ in forgeries}
    # The kinds the gateway must refuse by name are in the corpus.
    assert {"alg='none', empty signature", "wrong audience", "expired"} <= described
    assert any(what.startswith("HS256 keyed with operator's public key") for what in described)
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
    for what, token in forgeries:
        if not token.isascii() or "\x00" in token:
            continue  # not representable as gRPC metadata; refused by the client library
        error = await rpc_error(gateway.stub.GetPlan(request, metadata=auth(token), timeout=5))
        if len(token) > SOFT_METADATA_LIMIT - OTHER_METADATA_BYTES:
            # Beyond gRPC's soft metadata limit (8 KiB, counted over all of a
            # call's metadata, not the token alone) the transport may refuse
            # the call itself, at random; beyond the hard one (16 KiB) it always does.
            refusals = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert error.code() in refusals, what
            continue
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, what
        assert error.details().startswith("unauthenticated: "), (what, error.details())


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Basic b3BlcmF0b3I6cGFzcw=="),), (("authorization", "Bearer "),)],
    ids=["missing", "basic", "empty-bearer"],
)
async def test_missing_or_malformed_authorization_on_every_method(
    gateway: RunningGateway, metadata: tuple
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
    calls = [
        gateway.stub.GetPlan(request, metadata=metadata, timeout=2),
        gateway.stub.GetMetrics(model_gateway_pb2.MetricsRequest(), metadata=metadata, timeout=2),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    chunks, error = await stream_error(gateway.stub.StreamPlan(request, metadata=metadata))
    assert chunks == [] and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_token_for_another_audience_is_refused(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
    error = await rpc_error(gateway.stub.GetPlan(request, metadata=auth(token_for("sandbox"))))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "audience" in error.details()


async def test_a_caller_not_allowed_gets_permission_denied(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
    token = token_for("gateway", sub="memory")
    error = await rpc_error(gateway.stub.GetPlan(request, metadata=auth(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "memory" in error.details()


# ---------------------------------------------------------------------- GetPlan


async def test_get_plan_returns_numbered_steps_and_latency(
    gateway: RunningGateway, token_for: Callable[..., str], json_logs
) -> None:
    reply = await gateway.stub.GetPlan(
        model_gateway_pb2.PlanRequest(prompt=PROMPT),
        metadata=auth(token_for("gateway", sub="agent"), request_id="rid-gw-1"),
        timeout=5,
    )
    assert len(reply.steps) >= 3
    for number, step in enumerate(reply.steps, start=1):
        assert step.startswith(f"{number}. ") and len(step) > 5
    assert reply.model == "pagi-local-planner-1"
    assert reply.backend == "local"
    assert 0 < reply.latency_ms < 1000
    assert reply.request_id == "rid-gw-1"
    served = [line for line in json_logs.lines if '"plan_served"' in line]
    assert served and '"request_id": "rid-gw-1"' in served[-1] and '"caller": "agent"' in served[-1]
    assert PROMPT not in json_logs.text  # prompts may be private: only their size is logged


async def test_a_request_from_the_first_protocol_version_still_works(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    """A client built from the original .proto (prompt in, steps/model/latency_ms out)."""
    pool = descriptor_pool.DescriptorPool()
    old = descriptor_pb2.FileDescriptorProto(name="old_gateway.proto", package="pagi.gateway.v1")
    old.syntax = "proto3"
    request_type = old.message_type.add(name="PlanRequest")
    request_type.field.add(name="prompt", number=1, type=9, label=1)
    response_type = old.message_type.add(name="PlanResponse")
    response_type.field.add(name="steps", number=1, type=9, label=3)
    response_type.field.add(name="model", number=2, type=9, label=1)
    response_type.field.add(name="latency_ms", number=3, type=1, label=1)
    pool.Add(old)
    classes = message_factory.GetMessages([old], pool=pool)
    old_request = classes["pagi.gateway.v1.PlanRequest"]
    old_response = classes["pagi.gateway.v1.PlanResponse"]
    call = gateway.channel.unary_unary(
        GET_PLAN,
        request_serializer=old_request.SerializeToString,
        response_deserializer=old_response.FromString,
    )
    reply = await call(old_request(prompt=PROMPT), metadata=auth(token_for("gateway")), timeout=5)
    assert len(reply.steps) >= 3 and reply.steps[0].startswith("1. ")
    assert reply.model == "pagi-local-planner-1"
    assert reply.latency_ms > 0


@pytest.mark.parametrize(
    ("prompt", "max_steps", "expected"),
    [
        ("", 0, "prompt must not be empty"),
        (" \n\t ", 0, "prompt must not be empty"),
        ("x" * (32 * 1024 + 1), 0, "the limit is 32768"),
        ("é" * (16 * 1024 + 1), 0, "the limit is 32768"),  # bytes, not characters
        (PROMPT, 21, "max_steps must be at most 20"),
    ],
    ids=["empty", "blank", "oversized", "oversized-utf8", "too-many-steps"],
)
async def test_invalid_requests_get_invalid_argument(
    gateway: RunningGateway, token_for: Callable[..., str], prompt: str, max_steps: int, expected
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=prompt, max_steps=max_steps)
    error = await rpc_error(gateway.stub.GetPlan(request, metadata=auth(token_for("gateway"))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.details()
    chunks, error = await stream_error(
        gateway.stub.StreamPlan(request, metadata=auth(token_for("gateway")))
    )
    assert chunks == [] and error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_huge_message_is_refused_by_the_transport(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt="x" * (1024 * 1024))
    error = await rpc_error(gateway.stub.GetPlan(request, metadata=auth(token_for("gateway"))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await gateway.stub.GetPlan(
        model_gateway_pb2.PlanRequest(prompt=PROMPT), metadata=auth(token_for("gateway"))
    )
    assert ok.steps


async def test_max_steps_limits_the_plan(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT, max_steps=3)
    reply = await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")))
    assert len(reply.steps) == 3


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",
        b"\x0a\x05\xff\xfe\xfd\xfc\xfb",  # field 1 (prompt) holding invalid UTF-8
        b"\x0a\xff\xff\xff\xff\x0f",  # a length far beyond the message
        b"\x08",  # truncated varint
    ],
    ids=["junk", "invalid-utf8", "bad-length", "truncated"],
)
async def test_malformed_bytes_get_invalid_argument_and_the_server_keeps_serving(
    gateway: RunningGateway, token_for: Callable[..., str], payload: bytes
) -> None:
    raw = gateway.channel.unary_unary(
        GET_PLAN, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    error = await rpc_error(raw(payload, metadata=auth(token_for("gateway")), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in error.details()
    raw_stream = gateway.channel.unary_stream(
        "/pagi.gateway.v1.ModelGateway/StreamPlan",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    _, error = await stream_error(raw_stream(payload, metadata=auth(token_for("gateway"))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await gateway.stub.GetPlan(
        model_gateway_pb2.PlanRequest(prompt=PROMPT), metadata=auth(token_for("gateway"))
    )
    assert reply.steps


async def test_unauthenticated_garbage_is_refused_before_it_is_parsed(
    gateway: RunningGateway,
) -> None:
    raw = gateway.channel.unary_unary(
        GET_PLAN, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    error = await rpc_error(raw(b"\xff\xff", timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------------- StreamPlan


async def test_stream_plan_yields_the_same_steps_then_done(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
    whole = await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")))
    chunks = [
        c async for c in gateway.stub.StreamPlan(request, metadata=auth(token_for("gateway")))
    ]
    *steps, last = chunks
    assert [c.step for c in steps] == list(whole.steps)
    assert [c.index for c in steps] == list(range(len(steps)))
    assert not any(c.done for c in steps)
    assert last.done and last.step == "" and last.index == len(steps)
    assert last.latency_ms > 0 and last.backend == "local"


# ---------------------------------------------------------------------- a blocking backend


async def test_the_callers_deadline_reaches_the_backend(
    keys_dir: Path, token_for: Callable[..., str]
) -> None:
    backend = BlockingBackend()
    backend.release.set()
    async with serve_gateway(keys_dir, backend=backend) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")), timeout=1.5)
        await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")))
    with_deadline, without = backend.deadlines
    assert 0.5 < with_deadline < 1.5
    assert 29 < without <= 30  # PAGI_GATEWAY_MAX_DEADLINE_SECONDS bounds calls without one


async def test_a_slow_backend_gives_deadline_exceeded(
    keys_dir: Path, token_for: Callable[..., str]
) -> None:
    backend = BlockingBackend()
    async with serve_gateway(keys_dir, backend=backend) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        error = await rpc_error(
            gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")), timeout=0.3)
        )
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        backend.release.set()
        assert (await gateway.stub.GetPlan(request, metadata=auth(token_for("gateway")))).steps


async def test_excess_calls_wait_briefly_then_get_resource_exhausted(
    keys_dir: Path, token_for: Callable[..., str]
) -> None:
    backend = BlockingBackend()
    async with serve_gateway(
        keys_dir,
        backend=backend,
        pagi_gateway_max_concurrent_calls=1,
        pagi_gateway_queue_timeout_seconds=0.2,
    ) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        metadata = auth(token_for("gateway"))
        first = asyncio.ensure_future(gateway.stub.GetPlan(request, metadata=metadata, timeout=10))
        await asyncio.wait_for(backend.entered.wait(), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await rpc_error(gateway.stub.GetPlan(request, metadata=metadata, timeout=5))
        waited = loop.time() - started
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy" in error.details()
        assert 0.15 <= waited < 2.0
        # When to retry, where gRPC clients' retry policies look for it.
        pushback = dict(error.trailing_metadata() or ())["grpc-retry-pushback-ms"]
        assert 50 <= int(pushback) <= 30_000, pushback
        # A call that finds the slot freed within the waiting time goes through.
        queued = asyncio.ensure_future(gateway.stub.GetPlan(request, metadata=metadata, timeout=5))
        await asyncio.sleep(0.05)
        backend.release.set()
        assert (await first).steps and (await queued).steps
        metrics = await gateway.stub.GetMetrics(
            model_gateway_pb2.MetricsRequest(), metadata=metadata
        )
        [stats] = metrics.backends
        assert stats.rejected == 1 and stats.calls == 2 and stats.in_flight == 0
        assert metrics.max_concurrent_calls == 1


async def test_a_backend_bug_gives_internal_without_details(
    keys_dir: Path, token_for: Callable[..., str], json_logs
) -> None:
    async with serve_gateway(keys_dir, backend=BrokenBackend()) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        metadata = auth(token_for("gateway"))
        error = await rpc_error(gateway.stub.GetPlan(request, metadata=metadata))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in error.details() and "Traceback" not in error.details()
        chunks, error = await stream_error(gateway.stub.StreamPlan(request, metadata=metadata))
        assert [c.step for c in chunks] == ["1. first"]
        assert error.code() == grpc.StatusCode.INTERNAL and "secret" not in error.details()
        health = await health_pb2_grpc.HealthStub(gateway.channel).Check(
            health_pb2.HealthCheckRequest()
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "ZeroDivisionError" in json_logs.text  # the operator sees the bug in the logs


# ---------------------------------------------------------------------- metrics


async def test_metrics_count_calls_errors_and_latency(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    metadata = auth(token_for("gateway"))
    for _ in range(3):
        await gateway.stub.GetPlan(model_gateway_pb2.PlanRequest(prompt=PROMPT), metadata=metadata)
    [
        _
        async for _ in gateway.stub.StreamPlan(
            model_gateway_pb2.PlanRequest(prompt=PROMPT), metadata=metadata
        )
    ]
    metrics = await gateway.stub.GetMetrics(model_gateway_pb2.MetricsRequest(), metadata=metadata)
    [stats] = metrics.backends
    assert stats.backend == "local" and stats.model == "pagi-local-planner-1"
    assert stats.calls == 4 and stats.errors == 0
    assert stats.latency.count == 4
    assert 0 < stats.latency.p50_ms <= stats.latency.p95_ms <= stats.latency.max_ms
    assert metrics.uptime_seconds > 0


# ---------------------------------------------------------------------- the openai backend


async def openai_gateway(keys_dir: Path, url: str):
    backend = OpenAIBackend(url, model="fake-model", api_key="sk-x", retry_base_seconds=0.05)
    return serve_gateway(keys_dir, backend=backend)


async def test_openai_backend_through_the_gateway(
    keys_dir: Path, fake_openai: FakeOpenAI, token_for: Callable[..., str]
) -> None:
    metadata = auth(token_for("gateway"), request_id="rid-upstream-7")
    async with await openai_gateway(keys_dir, fake_openai.url("dynamic")) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        reply = await gateway.stub.GetPlan(request, metadata=metadata, timeout=5)
        assert list(reply.steps) == [f"{n}. {s}" for n, s in enumerate(PLAN_STEPS, start=1)]
        assert reply.backend == "openai" and reply.model == "fake-model"
        assert fake_openai.requests[-1].headers["x-request-id"] == "rid-upstream-7"
        chunks = [c async for c in gateway.stub.StreamPlan(request, metadata=metadata, timeout=5)]
        assert [c.step for c in chunks[:-1]] == list(reply.steps) and chunks[-1].done

        expected = {
            "down": grpc.StatusCode.UNAVAILABLE,
            "unauthorized": grpc.StatusCode.FAILED_PRECONDITION,
            "forbidden": grpc.StatusCode.PERMISSION_DENIED,
            "garbage": grpc.StatusCode.INTERNAL,
            "ratelimited": grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        for mode, status in expected.items():
            fake_openai.mode = mode
            error = await rpc_error(gateway.stub.GetPlan(request, metadata=metadata, timeout=5))
            assert error.code() == status, (mode, error.details())
            assert "sk-x" not in error.details()

        fake_openai.mode = "slow"
        error = await rpc_error(gateway.stub.GetPlan(request, metadata=metadata, timeout=0.5))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        fake_openai.mode = "cutoff"
        chunks, error = await stream_error(gateway.stub.StreamPlan(request, metadata=metadata))
        assert [c.step for c in chunks] == [
            "1. Inventory the log files",
            "2. Count the errors per hour",
        ]
        assert error.code() == grpc.StatusCode.UNAVAILABLE

        metrics = await gateway.stub.GetMetrics(
            model_gateway_pb2.MetricsRequest(), metadata=metadata
        )
        [stats] = metrics.backends
        assert stats.calls == 9 and stats.errors == 7
        # "down" was tried 1 + 3 times, the rest once each.
        assert dict(stats.backend_counters) == {"upstream_attempts": 12, "upstream_retries": 3}
        assert dict(stats.errors_by_code) == {
            "UNAVAILABLE": 2,
            "FAILED_PRECONDITION": 1,
            "PERMISSION_DENIED": 1,
            "INTERNAL": 1,
            "RESOURCE_EXHAUSTED": 1,
            "DEADLINE_EXCEEDED": 1,
        }


async def test_backend_errors_map_to_status_codes(
    keys_dir: Path, token_for: Callable[..., str]
) -> None:
    class Failing(PlanBackend):
        name = "failing"
        model = "failing-1"
        code = ErrorCode.UNAVAILABLE

        async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
            raise BackendError(self.code, f"reason for {self.code}")

        async def stream(self, prompt: str, max_steps: int, deadline: Deadline):
            raise BackendError(self.code, f"reason for {self.code}")
            yield ""

    backend = Failing()
    async with serve_gateway(keys_dir, backend=backend) as gateway:
        request = model_gateway_pb2.PlanRequest(prompt=PROMPT)
        metadata = auth(token_for("gateway"))
        for code in ErrorCode:
            backend.code = code
            error = await rpc_error(gateway.stub.GetPlan(request, metadata=metadata))
            assert error.code().name == code.name
            assert error.details() == f"reason for {code}"


# ---------------------------------------------------------------------- request ids, shutdown


@pytest.mark.parametrize("sent", ["has spaces in it", "x" * 500, "semi;colon"])
async def test_a_malformed_request_id_is_replaced(
    gateway: RunningGateway, token_for: Callable[..., str], sent: str
) -> None:
    reply = await gateway.stub.GetPlan(
        model_gateway_pb2.PlanRequest(prompt=PROMPT),
        metadata=auth(token_for("gateway"), request_id=sent),
    )
    assert reply.request_id != sent and len(reply.request_id) == 32


async def test_shutdown_finishes_calls_in_flight_and_reports_not_serving(
    keys_dir: Path, token_for: Callable[..., str]
) -> None:
    backend = BlockingBackend()
    async with serve_gateway(keys_dir, backend=backend) as gateway:
        health = health_pb2_grpc.HealthStub(gateway.channel)
        call = asyncio.ensure_future(
            gateway.stub.GetPlan(
                model_gateway_pb2.PlanRequest(prompt=PROMPT),
                metadata=auth(token_for("gateway")),
                timeout=10,
            )
        )
        await asyncio.wait_for(backend.entered.wait(), 5)
        await gateway.server.health.enter_graceful_shutdown()
        status = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopping = asyncio.ensure_future(gateway.server.stop(grace=5))
        await asyncio.sleep(0.1)
        backend.release.set()
        reply = await call
        assert list(reply.steps) == ["1. Wait", "2. Proceed"]
        await stopping
