"""``Decide``: an agent's next action from the local backend, an OpenAI-compatible server,
and the gRPC service that validates conversations and maps failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from gateway.backends.base import BackendError, Deadline, ErrorCode
from gateway.backends.local import plan_steps
from gateway.backends.local_decide import code_blocks, decide_locally, describe_result
from gateway.backends.openai import OpenAIBackend
from gateway.client import GatewayClient, GatewayError
from gateway.conversation import (
    ChatMessage,
    Conversation,
    Decision,
    ToolCall,
    ToolSpec,
    conversation_from_proto,
    conversation_to_proto,
)
from pagi.auth import TokenSigner
from proto import model_gateway_pb2
from testing.fake_openai import PLAN_TEXT, FakeOpenAI
from testing.gateway import RunningGateway, auth, serve_gateway
from testing.scripted_model import ScriptedModel, goal_for

PYTHON = ToolSpec(
    "python",
    "Runs a Python program.",
    {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
DEMO = ToolSpec("demo", "Prints a greeting.", {"type": "object", "properties": {}})
GOAL = "Compute these.\n```python\nprint(6 * 7)\n```\nand\n```\nprint('b')\n```\n```bash\nls\n```"


def conversation(*messages: ChatMessage, tools=(PYTHON, DEMO), choice="auto") -> Conversation:
    return Conversation(messages=messages, tools=tuple(tools), tool_choice=choice)


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def called(*calls: ToolCall) -> ChatMessage:
    return ChatMessage("assistant", "", calls)


def result(call_id: str, **observation: object) -> ChatMessage:
    return ChatMessage("tool", json.dumps(observation), tool_call_id=call_id)


# ---------------------------------------------------------------------- the local backend


def test_code_blocks_are_the_python_and_unmarked_fences_in_order() -> None:
    assert code_blocks(GOAL) == ["print(6 * 7)\n", "print('b')\n"]
    assert code_blocks("no code here") == []
    assert code_blocks("```py\n\n```") == []  # an empty block is no block


def test_local_backend_runs_one_block_per_turn_then_answers_with_the_outputs() -> None:
    first = decide_locally(conversation(ChatMessage("system", "s"), user(GOAL)), plan_steps)
    assert [(c.id, c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
        ("call_1", "python", {"code": "print(6 * 7)\n"})
    ]
    assert first.finish_reason == "tool_calls"
    history = [ChatMessage("system", "s"), user(GOAL), called(*first.tool_calls)]
    history.append(result("call_1", tool_status="ok", exit_code=0, stdout="42\n", stderr=""))
    second = decide_locally(conversation(*history), plan_steps)
    assert [c.id for c in second.tool_calls] == ["call_2"]
    history += [
        called(*second.tool_calls),
        result("call_2", tool_status="error", exit_code=1, stdout="", stderr="NameError: b"),
    ]
    answer = decide_locally(conversation(*history), plan_steps)
    assert answer.tool_calls == ()
    assert answer.content == ("Block 1: 42\nBlock 2: tool_status error, exit code 1: NameError: b")
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    # Deterministic: the same conversation, the same decision.
    assert decide_locally(conversation(*history), plan_steps) == answer


def test_local_backend_answers_a_single_block_with_its_output_alone() -> None:
    goal = "What is 2**10?\n```python\nprint(2**10)\n```"
    history = [user(goal), called(ToolCall("call_1", "python", "{}"))]
    history.append(result("call_1", tool_status="ok", exit_code=0, stdout="1024\n"))
    assert decide_locally(conversation(*history), plan_steps).content == "1024"


def test_local_backend_without_code_or_without_python_answers_with_a_plan() -> None:
    plan = decide_locally(conversation(user("Release the new version")), plan_steps)
    assert plan.tool_calls == () and plan.content.startswith("A plan:\n1. ")
    no_tool = decide_locally(conversation(user(GOAL), tools=(DEMO,)), plan_steps)
    assert no_tool.tool_calls == ()
    assert no_tool.content.startswith("The python tool is not on offer, so no code ran.")


def test_local_backend_asked_to_stop_reports_what_ran_and_what_did_not() -> None:
    history = [user(GOAL), called(ToolCall("call_1", "python", "{}"))]
    history.append(result("call_1", error="the tool output budget is spent"))
    final = decide_locally(conversation(*history, choice="none"), plan_steps)
    assert final.tool_calls == ()
    assert final.content == (
        "Block 1: not run: the tool output budget is spent\nNot run: block 2 (the run ended first)."
    )


def test_describe_result_reads_any_text() -> None:
    assert describe_result("not json at all") == "not json at all"
    assert describe_result("[1, 2]") == "[1, 2]"
    assert describe_result(json.dumps({"tool_status": "ok", "stdout": ""})) == "(no output)"
    assert describe_result("x" * 10_000).endswith("\u2026")


# ---------------------------------------------------------------------- proto round trip


def test_a_conversation_survives_the_wire() -> None:
    original = conversation(
        ChatMessage("system", "be brief"),
        user("go"),
        called(ToolCall("c1", "python", '{"code": "1"}')),
        ChatMessage("tool", "{}", tool_call_id="c1"),
        choice="none",
    )
    again = conversation_from_proto(conversation_to_proto(original))
    assert again == original


# ---------------------------------------------------------------------- the OpenAI backend


def openai_backend(url: str) -> OpenAIBackend:
    return OpenAIBackend(
        url, model="fake-model", api_key="sk-secret-key-1234", retry_base_seconds=0.05
    )


async def test_openai_backend_sends_tools_and_reads_tool_calls() -> None:
    server = ScriptedModel().start()
    backend = openai_backend(server.base_url)
    try:
        goal = goal_for("two-calls")
        decision = await backend.decide(
            conversation(ChatMessage("system", "s"), user(goal)), Deadline.after(5)
        )
        assert [(c.id, c.name, json.loads(c.arguments)) for c in decision.tool_calls] == [
            ("a", "python", {"code": "print(1)"}),
            ("b", "python", {"code": "print(2)"}),
        ]
        assert decision.finish_reason == "tool_calls"
        assert (decision.usage.prompt_tokens, decision.usage.completion_tokens) == (100, 20)
        history = [ChatMessage("system", "s"), user(goal), called(*decision.tool_calls)]
        history += [result("a", stdout="1\n"), result("b", stdout="2\n")]
        answer = await backend.decide(conversation(*history), Deadline.after(5))
        assert answer.tool_calls == () and answer.content == "Outputs: 1 2"
        body = server.of("two-calls")[-1].body
        assert body["tool_choice"] == "auto" and body["stream"] is False
        assert body["tools"][0] == {
            "type": "function",
            "function": {
                "name": "python",
                "description": "Runs a Python program.",
                "parameters": PYTHON.parameters,
            },
        }
        assistant, first, second = body["messages"][2:]
        assert assistant["role"] == "assistant" and assistant["content"] is None
        assert assistant["tool_calls"][1] == {
            "id": "b",
            "type": "function",
            "function": {"name": "python", "arguments": '{"code": "print(2)"}'},
        }
        assert first == {"role": "tool", "tool_call_id": "a", "content": '{"stdout": "1\\n"}'}
        assert second["tool_call_id"] == "b"
    finally:
        await backend.aclose()
        server.stop()


async def test_openai_backend_decide_retries_and_maps_errors(fake_openai: FakeOpenAI) -> None:
    talk = conversation(user("go"))
    backend = openai_backend(fake_openai.url("flaky503"))
    try:
        decision = await backend.decide(talk, Deadline.after(10))
    finally:
        await backend.aclose()
    assert decision == Decision(content=PLAN_TEXT, usage=decision.usage)
    assert len(fake_openai.of("flaky503")) == 3
    # No usage reported: estimated from the characters sent and received.
    assert decision.usage.prompt_tokens == 1 and decision.usage.completion_tokens > 10
    expected = {
        "down": ErrorCode.UNAVAILABLE,
        "garbage": ErrorCode.INTERNAL,
        "nochoices": ErrorCode.INTERNAL,
        "unauthorized": ErrorCode.FAILED_PRECONDITION,
        "notfound": ErrorCode.FAILED_PRECONDITION,
        "forbidden": ErrorCode.PERMISSION_DENIED,
    }
    for scenario, code in expected.items():
        backend = openai_backend(fake_openai.url(scenario))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.decide(talk, Deadline.after(2))
        finally:
            await backend.aclose()
        assert caught.value.code == code, scenario
        assert "sk-secret" not in caught.value.message
    backend = openai_backend(fake_openai.url("slow"))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.decide(talk, Deadline.after(0.3))
    finally:
        await backend.aclose()
    assert caught.value.code == ErrorCode.DEADLINE_EXCEEDED


# ---------------------------------------------------------------------- the gRPC service


@pytest.fixture
async def local_gateway(keys_dir: Path) -> AsyncIterator[RunningGateway]:
    async with serve_gateway(keys_dir, pagi_gateway_max_conversation_bytes=4096) as running:
        yield running


async def test_decide_through_the_gateway_with_the_client(
    local_gateway: RunningGateway, keys_dir: Path
) -> None:
    client = GatewayClient(local_gateway.target, TokenSigner.from_keys_dir(keys_dir, "agent"), 5)
    try:
        served = await client.decide(conversation(user(GOAL)))
    finally:
        await client.close()
    assert served.backend == "local" and served.model == "pagi-local-planner-1"
    assert served.latency_ms >= 0
    assert [c.name for c in served.decision.tool_calls] == ["python"]
    assert served.decision.usage.total_tokens == (
        served.decision.usage.prompt_tokens + served.decision.usage.completion_tokens
    )


def _request(**fields: object) -> model_gateway_pb2.DecideRequest:
    base = conversation_to_proto(conversation(user("go")))
    base.MergeFrom(model_gateway_pb2.DecideRequest(**fields))  # type: ignore[arg-type]
    return base


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (model_gateway_pb2.DecideRequest(), "messages must not be empty"),
        (
            model_gateway_pb2.DecideRequest(messages=[model_gateway_pb2.ChatMessage(role="god")]),
            "role must be one of",
        ),
        (
            model_gateway_pb2.DecideRequest(messages=[model_gateway_pb2.ChatMessage(role="tool")]),
            "needs a tool_call_id",
        ),
        (
            model_gateway_pb2.DecideRequest(
                messages=[
                    model_gateway_pb2.ChatMessage(
                        role="user", tool_calls=[model_gateway_pb2.ToolCall(id="x", name="y")]
                    )
                ]
            ),
            "only assistant messages call tools",
        ),
        (_request(tools=[model_gateway_pb2.ToolSpec(name="bad name")]), "name must match"),
        (
            _request(
                tools=[model_gateway_pb2.ToolSpec(name="a"), model_gateway_pb2.ToolSpec(name="a")]
            ),
            "offered twice",
        ),
        (_request(tools=[model_gateway_pb2.ToolSpec(name="a", parameters_json="{")]), "not JSON"),
        (
            _request(tools=[model_gateway_pb2.ToolSpec(name="a", parameters_json="[]")]),
            "not a JSON object",
        ),
        (_request(tool_choice="required"), "tool_choice must be"),
        (
            _request(messages=[model_gateway_pb2.ChatMessage(role="user", content="x" * 5000)]),
            "the limit is 4096",
        ),
    ],
    ids=[
        "empty",
        "bad-role",
        "tool-without-id",
        "user-calls",
        "bad-tool-name",
        "duplicate-tool",
        "params-not-json",
        "params-not-object",
        "bad-choice",
        "oversized",
    ],
)
async def test_invalid_conversations_get_invalid_argument(
    local_gateway: RunningGateway,
    token_for: Callable[..., str],
    request_: model_gateway_pb2.DecideRequest,
    expected: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await local_gateway.stub.Decide(request_, metadata=auth(token_for("gateway")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in caught.value.details()


async def test_decide_needs_a_token(local_gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await local_gateway.stub.Decide(_request())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_model_server_failing_is_a_clear_gateway_error(
    keys_dir: Path, fake_openai: FakeOpenAI
) -> None:
    async with serve_gateway(
        keys_dir,
        model_backend="openai",
        model_base_url=fake_openai.url("down"),
        pagi_gateway_retry_base_seconds=0.01,
        pagi_gateway_retry_cap_seconds=0.02,
    ) as running:
        client = GatewayClient(running.target, TokenSigner.from_keys_dir(keys_dir, "agent"), 5)
        try:
            with pytest.raises(GatewayError) as caught:
                await client.decide(conversation(user("go")))
            with pytest.raises(GatewayError) as late:
                await client.decide(conversation(user("go")), timeout_seconds=0.001)
        finally:
            await client.close()
    assert caught.value.code == "unavailable" and "gave up after 4 attempts" in caught.value.message
    assert late.value.code == "deadline_exceeded"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\xfd",
        b"\x0a\x05\x0a\x03\xff\xfe\xfd",  # a message whose role is not UTF-8
        b"\x0a\xff\xff\xff\xff\x0f",  # a length far beyond the message
        b"\x12",  # truncated
    ],
    ids=["junk", "invalid-utf8", "bad-length", "truncated"],
)
async def test_malformed_decide_bytes_get_invalid_argument(
    local_gateway: RunningGateway, token_for: Callable[..., str], payload: bytes
) -> None:
    raw = local_gateway.channel.unary_unary(
        "/pagi.gateway.v1.ModelGateway/Decide",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(payload, metadata=auth(token_for("gateway")), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    served = await local_gateway.stub.Decide(_request(), metadata=auth(token_for("gateway")))
    assert served.content.startswith("A plan:")
