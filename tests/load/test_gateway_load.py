"""The model gateway under a flood of calls and of cancelled streams.

Far more concurrent calls than the gateway runs at once: each ends OK or
with a deliberate refusal (RESOURCE_EXHAUSTED / UNAVAILABLE with a
message), never UNKNOWN or INTERNAL; streams cancelled half-way leave no
work behind; afterwards the gateway serves and holds no more fds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pagi.stack import Stack
from proto import model_gateway_pb2, model_gateway_pb2_grpc
from tests.fuzz.live import fd_count, service_pid, start_live_stack, wait_until

CALLS = 600
CONCURRENCY = 150
CANCELLED_STREAMS = 100
ACCEPTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    stack = start_live_stack(tmp_path_factory.mktemp("gw-load"), keys_dir, services=["gateway"])
    yield stack
    stack.stop()


async def _flood(target: str, token: str) -> tuple[Counter[str], list[float], float]:
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(CONCURRENCY)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)

        async def one(number: int) -> None:
            request = model_gateway_pb2.PlanRequest(prompt=f"plan number {number}")
            async with semaphore:
                started = time.perf_counter()
                try:
                    await stub.GetPlan(request, metadata=metadata, timeout=20)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    if exc.code() not in ACCEPTED or not exc.details():
                        codes[f"bad: {exc.code().name} {exc.details()!r}"] += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(CALLS)))
        elapsed = time.perf_counter() - started
    return codes, latencies, elapsed


async def _cancel_streams(target: str, token: str) -> int:
    """Open streams and cancel each after its first message; return how many got one."""
    metadata = (("authorization", f"Bearer {token}"),)
    got_first = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        for number in range(CANCELLED_STREAMS):
            call = stub.StreamPlan(
                model_gateway_pb2.PlanRequest(prompt=f"stream {number}", max_steps=20),
                metadata=metadata,
                timeout=20,
            )
            try:
                async for _ in call:
                    got_first += 1
                    break
            finally:
                call.cancel()
    return got_first


def test_flood_gets_deliberate_answers_only(gateway: Stack, token_for):
    target = gateway.settings.gateway_target
    pid = service_pid(gateway, "gateway")
    token = token_for("gateway", sub="agent")
    fds_before = fd_count(pid)
    codes, latencies, elapsed = asyncio.run(_flood(target, token))
    latencies.sort()
    figures = {
        "codes": dict(codes),
        "calls_per_s": round(CALLS / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
    }
    print(f"gateway flood: {figures}")
    assert sum(n for code, n in codes.items() if not code.startswith("bad")) == CALLS, figures
    assert not [code for code in codes if code.startswith("bad")], figures
    assert codes["OK"] > 0, figures

    got_first = asyncio.run(_cancel_streams(target, token))
    assert got_first == CANCELLED_STREAMS, f"only {got_first} streams produced a first step"

    assert gateway.processes["gateway"].process.poll() is None, "the gateway exited"
    settled = wait_until(lambda: fd_count(pid) <= fds_before, timeout=10)
    assert settled, f"fds: {fds_before} before, {fd_count(pid)} after"
    with grpc.insecure_channel(target) as channel:
        reply = model_gateway_pb2_grpc.ModelGatewayStub(channel).GetPlan(
            model_gateway_pb2.PlanRequest(prompt="still there?"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    assert reply.steps
