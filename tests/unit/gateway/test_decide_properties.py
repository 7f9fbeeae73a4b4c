"""Whatever a model server answers, reading it gives a decision or a clear error.

Replies are generated as JSON documents shaped like chat completions with
tool calls, with every field free to be of any type, missing or hostile
(lone surrogates, huge numbers, deep nesting): reading one either gives a
:class:`Decision` that the gateway can put on the wire, or a
:class:`BackendError`; nothing else escapes.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.backends.base import BackendError
from gateway.backends.chat_wire import parse_decision
from gateway.conversation import (
    ChatMessage,
    Conversation,
    DecisionResult,
    ToolSpec,
    decision_to_proto,
)
from proto import model_gateway_pb2

CONVERSATION = Conversation(
    messages=(ChatMessage("user", "go"),), tools=(ToolSpec("python", "", {}),)
)

text = st.text(alphabet=st.characters(codec=None), max_size=30) | st.sampled_from(
    ["\ud800", "python", "", "call_1", "{", '{"code": "1"}']
)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def maybe(value: st.SearchStrategy) -> st.SearchStrategy:
    return value | anything


function = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(st.sampled_from(["python", "shell", "", "x" * 500])),
        "arguments": maybe(st.sampled_from(['{"code": "print(1)"}', "{", ""]) | anything),
    },
)
tool_call = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(st.sampled_from(["c1", "c1", "", "i" * 300])),
        "type": maybe(st.just("function")),
        "function": maybe(function),
    },
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": maybe(st.just("assistant")),
        "content": maybe(text | st.lists(st.fixed_dictionaries({"text": text}), max_size=3)),
        "tool_calls": maybe(st.lists(maybe(tool_call), max_size=5)),
        "function_call": maybe(function),
    },
)
reply = st.fixed_dictionaries(
    {},
    optional={
        "choices": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={"message": maybe(message), "finish_reason": maybe(text)},
                    )
                ),
                max_size=2,
            )
        ),
        "usage": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": maybe(st.integers(-5, 2**40)),
                    "completion_tokens": maybe(st.integers(-5, 2**40)),
                },
            )
        ),
    },
)


def _encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=reply | anything)
def test_any_reply_is_a_decision_or_a_backend_error(document: object) -> None:
    try:
        decision = parse_decision(_encode(document), CONVERSATION)
    except BackendError:
        return
    wire = decision_to_proto(DecisionResult(decision, "m", "openai", 1.0), "rid")
    again = model_gateway_pb2.DecideResponse.FromString(wire.SerializeToString())
    assert len(again.tool_calls) == len(decision.tool_calls) <= 64
    assert len({call.id for call in again.tool_calls}) == len(again.tool_calls)
    assert all(call.id for call in again.tool_calls)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_a_decision_or_a_backend_error(raw: bytes) -> None:
    try:
        parse_decision(raw, CONVERSATION)
    except BackendError:
        pass


def test_deeply_nested_replies_are_refused_cleanly() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    try:
        parse_decision(deep, CONVERSATION)
    except BackendError as exc:
        assert "unparseable" in exc.message
