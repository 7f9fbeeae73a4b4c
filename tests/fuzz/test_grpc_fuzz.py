"""The model gateway under arbitrary requests and raw bytes: a proper status, in time.

A client may send any bytes as a gRPC message. The gateway must answer each
call quickly with the deliberate status the input calls for (OK or
INVALID_ARGUMENT here; UNIMPLEMENTED, RESOURCE_EXHAUSTED for the odd cases
below), never UNKNOWN or INTERNAL (an unhandled exception), never
DEADLINE_EXCEEDED or UNAVAILABLE (a hang or a crash), and keep serving.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.server import max_receive_bytes
from gateway.settings import GatewaySettings
from pagi.stack import Stack
from proto import model_gateway_pb2, model_gateway_pb2_grpc
from testing.live import assert_grpc_answer

pytestmark = pytest.mark.slow

SERVICE = "/pagi.gateway.v1.ModelGateway"
OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
CALL_TIMEOUT = 6.0
ANSWER_WITHIN = 3.0
"""Answers take milliseconds (13 ms at most, measured); this bound leaves a loaded CI
machine room, and is well inside the call's timeout so that a late answer fails too."""
MAX_PROMPT_BYTES = GatewaySettings.model_fields["pagi_gateway_max_prompt_bytes"].default
MAX_STEPS = GatewaySettings.model_fields["pagi_gateway_max_steps"].default
RECEIVE_LIMIT = max_receive_bytes(GatewaySettings(_env_file=None))


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def channel(live_stack: Stack):
    with grpc.insecure_channel(live_stack.settings.gateway_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def auth(token_for) -> list[tuple[str, str]]:
    # Module-scoped tokens live 300 s; the fuzz run is far shorter.
    return [("authorization", f"Bearer {token_for('gateway', sub='agent')}")]


def assert_serving(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def expected_status(request: model_gateway_pb2.PlanRequest) -> grpc.StatusCode:
    """The status the gateway's documented limits call for."""
    if request.ByteSize() > RECEIVE_LIMIT:
        return grpc.StatusCode.RESOURCE_EXHAUSTED  # refused by gRPC before it is parsed
    too_long = len(request.prompt.encode("utf-8", "surrogatepass")) > MAX_PROMPT_BYTES
    if not request.prompt.strip() or too_long or request.max_steps > MAX_STEPS:
        return INVALID_ARGUMENT
    return OK


PROMPTS = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=2000),
    st.sampled_from(["", " ", "\x00", "\u202e" * 50, "a" * 32 * 1024, "a" * (32 * 1024 + 1)]),
    # Around the prompt limit, and past the transport limit (a conversation's).
    st.integers(min_value=30_000, max_value=400_000).map(lambda n: "é" * n),
)


@settings(max_examples=60, deadline=None)
@given(prompt=PROMPTS, max_steps=st.integers(min_value=0, max_value=2**32 - 1))
def test_arbitrary_plan_requests(channel, auth, prompt: str, max_steps: int):
    stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
    request = model_gateway_pb2.PlanRequest(prompt=prompt, max_steps=max_steps)
    expected = {expected_status(request)}
    for method in (stub.GetPlan, stub.StreamPlan):
        assert_grpc_answer(
            lambda call=method: call(request, metadata=auth, timeout=CALL_TIMEOUT),
            expected,
            ANSWER_WITHIN,
        )


RAW_MESSAGES = st.one_of(
    st.binary(max_size=300),
    # Field 1 (prompt) as length-delimited bytes: invalid UTF-8, lying lengths.
    st.binary(max_size=100).map(lambda b: b"\x0a" + bytes([len(b) & 0x7F]) + b),
    st.binary(max_size=60).map(lambda b: b"\x0a\xff\xff\xff\xff\x0f" + b),
    st.sampled_from(
        [
            b"",
            b"\x0a\x02\xff\xfe",  # prompt that is not UTF-8
            b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # max_steps overflowing uint32
            b"\x08" + b"\xff" * 20,  # varint that never ends
            b"\x0b\x0c",  # deprecated group wire types
            b"\x0a\x05hello\x0a\x05world",  # repeated scalar field
            b"\xf8\xff\xff\xff\x0f\x00",  # the largest field number
            b"\x00" * 1000,
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GetPlan", "StreamPlan", "GetMetrics"]),
    payload=RAW_MESSAGES,
)
def test_raw_bytes_get_a_proper_status(channel, auth, method: str, payload: bytes):
    path = f"{SERVICE}/{method}"
    if method == "StreamPlan":
        call = channel.unary_stream(
            path, request_serializer=_identity, response_deserializer=_identity
        )
    else:
        call = channel.unary_unary(
            path, request_serializer=_identity, response_deserializer=_identity
        )
    # Bytes that do not parse are INVALID_ARGUMENT; those that do, a plan or its refusal.
    assert_grpc_answer(
        lambda: call(payload, metadata=auth, timeout=CALL_TIMEOUT),
        {OK, INVALID_ARGUMENT},
        ANSWER_WITHIN,
    )


@settings(max_examples=60, deadline=None)
@given(
    request_id=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2000
    ),
    extra=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9\-_.]{0,30}", fullmatch=True).filter(
                lambda k: (
                    k not in {"authorization", "te", "content-type", "user-agent"}
                    and not k.startswith("grpc")
                    and not k.endswith("-bin")
                )
            ),
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
        ),
        max_size=5,
    ),
)
def test_odd_metadata(channel, auth, request_id: str, extra):
    stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
    metadata = [*auth, ("x-request-id", request_id.strip() or "x"), *extra]
    assert_grpc_answer(
        lambda: stub.GetPlan(
            model_gateway_pb2.PlanRequest(prompt="plan"), metadata=metadata, timeout=CALL_TIMEOUT
        ),
        {OK},
        ANSWER_WITHIN,
    )


def test_unknown_methods_and_oversized_messages(channel, auth):
    unknown = channel.unary_unary(
        f"{SERVICE}/DropAllTables", request_serializer=_identity, response_deserializer=_identity
    )
    assert_grpc_answer(
        lambda: unknown(b"", metadata=auth, timeout=CALL_TIMEOUT),
        {grpc.StatusCode.UNIMPLEMENTED},
        ANSWER_WITHIN,
    )
    get_plan = channel.unary_unary(
        f"{SERVICE}/GetPlan", request_serializer=_identity, response_deserializer=_identity
    )
    huge = b"\x0a" + _varint(6 * 1024 * 1024) + b"a" * (6 * 1024 * 1024)
    assert_grpc_answer(
        lambda: get_plan(huge, metadata=auth, timeout=CALL_TIMEOUT),
        {grpc.StatusCode.RESOURCE_EXHAUSTED, INVALID_ARGUMENT},
        ANSWER_WITHIN,
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def test_gateway_still_serving_after_the_fuzzing(channel, auth, live_stack: Stack):
    assert live_stack.processes["gateway"].process.poll() is None, "the gateway exited"
    assert_serving(channel)
    stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
    reply = stub.GetPlan(model_gateway_pb2.PlanRequest(prompt="plan"), metadata=auth, timeout=10)
    assert reply.steps
