"""The model gateway under a flood of calls and of cancelled streams.

Two floods of 600 calls, 150 at a time. With the built-in planner (which
answers without waiting on anything) every call is served. With a model
server that takes 50 ms a call, the flood is far beyond the gateway's 8
slots: at least ``MIN_SERVED_SHARE`` of the calls are served and every
other one is a clean RESOURCE_EXHAUSTED that says when to retry. Streams
cancelled half-way leave no work behind; afterwards the gateway serves and
holds no more fds.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from gateway.service import RETRY_PUSHBACK_KEY
from pagi.stack import Stack
from proto import model_gateway_pb2, model_gateway_pb2_grpc
from testing.live import fd_count, service_pid, start_live_stack, wait_until
from testing.load_driver import capacity_problems, percentile_ms
from tests.load.model_server import timed_model_server

CALLS = 600
CONCURRENCY = 150
CANCELLED_STREAMS = 100
BUSY_RETRIES = 20
"""Busy answers a stream may get before it counts as never served (a leaked slot)."""
UPSTREAM_SECONDS = 0.05
"""How long the fake model server takes per call: 8 slots serve at most 160 calls/s."""
MIN_SERVED_SHARE = 0.26
"""Calls served when the flood is beyond capacity (about slots x queue wait / upstream time
over the waiting callers). Measured on the 2-core machine at load averages of 7 to 9:
0.32-0.39 with 8 slots (the default), 0.20-0.24 with 4, 0.12 with 2. The bar holds
with a fifth to spare under the slowest healthy run and fails a gateway that lost half
its slots."""


@dataclass
class Flood:
    """How the calls of one flood ended."""

    codes: Counter[str] = field(default_factory=Counter)
    unclean: list[str] = field(default_factory=list)
    """Answers other than OK or a RESOURCE_EXHAUSTED with a message and a retry hint."""
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def served_share(self) -> float:
        """Share of the calls that got a plan."""
        return self.codes["OK"] / CALLS

    def capacity_problems(self, min_served_share: float) -> list[str]:
        """Why this flood breaks the capacity claim (see :func:`capacity_problems`)."""
        return capacity_problems(
            CALLS, self.codes.total(), self.codes["OK"], self.unclean, min_served_share
        )

    def figures(self) -> dict[str, object]:
        """What to print and to show in assertion messages."""
        return {
            "codes": dict(self.codes),
            "served_share": round(self.served_share, 3),
            "served_per_s": round(self.codes["OK"] / self.elapsed, 1) if self.elapsed else 0,
            "p50_ms": round(percentile_ms(self.latencies, 0.5), 1),
            "p99_ms": round(percentile_ms(self.latencies, 0.99), 1),
            "unclean": self.unclean[:5],
        }


def refusal_problem(error: grpc.aio.AioRpcError) -> str | None:
    """Why a failed call is not a clean refusal for lack of capacity, or None."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return f"{error.code().name}: {error.details()!r}"
    if not error.details():
        return "RESOURCE_EXHAUSTED without a message"
    pushback = dict(error.trailing_metadata() or ()).get(RETRY_PUSHBACK_KEY)
    if not isinstance(pushback, str) or not pushback.isdigit():
        return f"RESOURCE_EXHAUSTED without a usable {RETRY_PUSHBACK_KEY}: {pushback!r}"
    return None


async def _flood(target: str, token: str) -> Flood:
    flood = Flood()
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
                    flood.codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    flood.codes[exc.code().name] += 1
                    problem = refusal_problem(exc)
                    if problem is not None:
                        flood.unclean.append(problem)
                flood.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(CALLS)))
        flood.elapsed = time.perf_counter() - started
    return flood


async def _cancel_streams(target: str, token: str) -> int:
    """Open streams and cancel each after its first message; return how many got one.

    A cancelled stream gives its upstream slot back once the gateway sees the
    cancellation, which a loaded machine may delay past the next stream's
    queue wait: a busy answer is then retried after the gateway's pushback,
    as a client does. A slot that never came back would leave every later
    stream busy until its retries run out.
    """
    metadata = (("authorization", f"Bearer {token}"),)
    got_first = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        for number in range(CANCELLED_STREAMS):
            request = model_gateway_pb2.PlanRequest(prompt=f"stream {number}", max_steps=20)
            if await _first_step(stub, request, metadata):
                got_first += 1
    return got_first


async def _first_step(
    stub: model_gateway_pb2_grpc.ModelGatewayStub,
    request: model_gateway_pb2.PlanRequest,
    metadata: tuple[tuple[str, str], ...],
) -> bool:
    """Whether a stream of ``request`` yields a step (then cancelled), busy answers retried."""
    for _ in range(BUSY_RETRIES):
        call = stub.StreamPlan(request, metadata=metadata, timeout=20)
        try:
            async for _ in call:
                return True
            return False
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            pushback = dict(error.trailing_metadata() or ()).get(RETRY_PUSHBACK_KEY)
            await asyncio.sleep(float(pushback or 100) / 1000)
        finally:
            call.cancel()
    return False


# --------------------------------------------------------------------------- built-in planner


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    stack = start_live_stack(tmp_path_factory.mktemp("gw-load"), keys_dir, services=["gateway"])
    yield stack
    stack.stop()


def test_flood_is_served_whole(gateway: Stack, token_for):
    """The built-in planner never waits, so no call waits for a slot: all 600 are served."""
    target = gateway.settings.gateway_target
    pid = service_pid(gateway, "gateway")
    token = token_for("gateway", sub="agent")
    fds_before = fd_count(pid)
    flood = asyncio.run(_flood(target, token))
    print(f"gateway flood, built-in planner: {flood.figures()}")
    assert flood.capacity_problems(1.0) == [], flood.figures()

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


# --------------------------------------------------------------------------- slow model server


@pytest.fixture(scope="module")
def model_server_url() -> Iterator[str]:
    with timed_model_server(UPSTREAM_SECONDS) as url:
        yield url


def start_gateway_on(url: str, state: Path, keys_dir: Path, **overrides: str) -> Stack:
    """A gateway whose plans come from the model server at ``url``."""
    return start_live_stack(
        state,
        keys_dir,
        services=["gateway"],
        MODEL_BACKEND="openai",
        MODEL_BASE_URL=url,
        MODEL_NAME="fake-model",
        MODEL_API_KEY="sk-load-test",
        **overrides,
    )


def flood_through(stack: Stack, token: str) -> Flood:
    flood = asyncio.run(_flood(stack.settings.gateway_target, token))
    assert stack.processes["gateway"].process.poll() is None, "the gateway exited"
    return flood


def test_flood_beyond_capacity_is_served_to_capacity_and_refused_cleanly(
    model_server_url: str, tmp_path: Path, keys_dir: Path, token_for
):
    stack = start_gateway_on(model_server_url, tmp_path, keys_dir)
    try:
        flood = flood_through(stack, token_for("gateway", sub="agent"))
    finally:
        stack.stop()
    print(f"gateway flood, {UPSTREAM_SECONDS * 1000:.0f} ms model server: {flood.figures()}")
    assert flood.codes["RESOURCE_EXHAUSTED"] > 0, "the flood never reached the gateway's limit"
    assert flood.capacity_problems(MIN_SERVED_SHARE) == [], flood.figures()


def test_capacity_check_fails_a_gateway_with_a_quarter_of_its_slots(
    model_server_url: str, tmp_path: Path, keys_dir: Path, token_for
):
    """Guards the bar: a gateway left with 2 slots of 8 serves too few, and the check says so."""
    stack = start_gateway_on(
        model_server_url, tmp_path, keys_dir, PAGI_GATEWAY_MAX_CONCURRENT_CALLS="2"
    )
    try:
        flood = flood_through(stack, token_for("gateway", sub="agent"))
    finally:
        stack.stop()
    print(f"gateway flood, 2 slots: {flood.figures()}")
    problems = flood.capacity_problems(MIN_SERVED_SHARE)
    assert len(problems) == 1 and "must be" in problems[0], (problems, flood.figures())
