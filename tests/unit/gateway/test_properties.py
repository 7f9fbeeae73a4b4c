"""Properties over arbitrary input: the planner, the reply parser, the wire decoder."""

from __future__ import annotations

import random
from collections.abc import Callable

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.backends.local import plan_steps
from gateway.backends.parsing import MAX_STEP_CHARS, StepParser, parse_steps
from proto import model_gateway_pb2
from testing.gateway import RunningGateway, auth


@settings(max_examples=300, deadline=None)
@given(prompt=st.text(max_size=2000), max_steps=st.integers(min_value=1, max_value=20))
def test_any_prompt_gives_a_bounded_clean_plan(prompt: str, max_steps: int) -> None:
    steps = plan_steps(prompt, max_steps)
    assert 1 <= len(steps) <= max_steps
    for step in steps:
        assert step.strip() and len(step) <= 300
        assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in step)
    assert plan_steps(prompt, max_steps) == steps


@settings(max_examples=300, deadline=None)
@given(
    reply=st.text(alphabet=st.sampled_from("12.) -*\n abcXYZ:#*_\t\x00é"), max_size=400),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
    max_steps=st.integers(min_value=1, max_value=10),
)
def test_chunking_never_changes_the_steps(reply: str, cuts: list[int], max_steps: int) -> None:
    parser = StepParser(max_steps)
    got: list[str] = []
    start = 0
    for cut in sorted(set(cuts)):
        got += parser.feed(reply[start:cut])
        start = max(start, cut)
    got += parser.feed(reply[start:])
    got += parser.finish()
    assert got == parse_steps(reply, max_steps)
    assert len(got) <= max_steps
    assert all(step and len(step) <= MAX_STEP_CHARS for step in got)


async def test_random_bytes_never_crash_the_decoder(
    gateway: RunningGateway, token_for: Callable[..., str]
) -> None:
    rng = random.Random(20261125)
    raw = gateway.channel.unary_unary(
        "/pagi.gateway.v1.ModelGateway/GetPlan",
        request_serializer=lambda b: b,
        response_deserializer=model_gateway_pb2.PlanResponse.FromString,
    )
    metadata = auth(token_for("gateway"))
    seen: set[grpc.StatusCode] = set()
    for _ in range(300):
        payload = rng.randbytes(rng.randint(1, 64))
        try:
            reply = await raw(payload, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            seen.add(error.code())
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        else:
            seen.add(grpc.StatusCode.OK)
            assert reply.steps  # bytes that happen to decode to a usable prompt
    assert grpc.StatusCode.INVALID_ARGUMENT in seen
