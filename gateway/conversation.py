"""An agent's conversation with a model, and the model's next action, as typed values.

The ``Decide`` RPC carries these between the agent and the gateway; the
backends read a :class:`Conversation` and answer a :class:`Decision`. The
functions at the bottom convert to and from the protobuf messages, so
neither the agent nor a backend handles protobuf objects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from proto import model_gateway_pb2

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})
ToolChoice = Literal["auto", "none"]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What function-calling APIs accept as a function name."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool on offer: its name, what it does, the JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for; ``arguments`` is its JSON text, unchecked."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message; ``tool_calls`` on assistant messages, ``tool_call_id`` on tool messages."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class Conversation:
    """What the model decides on: the messages so far and the tools it may call."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_tokens: int = 0

    @property
    def may_call_tools(self) -> bool:
        """Whether the model may answer with tool calls."""
        return bool(self.tools) and self.tool_choice == "auto"


@dataclass(frozen=True)
class Usage:
    """Tokens one model call used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt and completion together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Decision:
    """The model's next action: tool calls, or (when there are none) a final answer."""

    tool_calls: tuple[ToolCall, ...] = ()
    content: str = ""
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class DecisionResult:
    """A decision as the gateway served it."""

    decision: Decision
    model: str
    backend: str
    latency_ms: float


class InvalidConversation(ValueError):
    """A conversation the gateway refuses; the message says why."""


# ---------------------------------------------------------------------- protobuf


def _call_to_proto(call: ToolCall) -> model_gateway_pb2.ToolCall:
    return model_gateway_pb2.ToolCall(id=call.id, name=call.name, arguments_json=call.arguments)


def _call_from_proto(call: model_gateway_pb2.ToolCall) -> ToolCall:
    return ToolCall(id=call.id, name=call.name, arguments=call.arguments_json)


def conversation_to_proto(conversation: Conversation) -> model_gateway_pb2.DecideRequest:
    """The ``DecideRequest`` that carries ``conversation``."""
    return model_gateway_pb2.DecideRequest(
        messages=[
            model_gateway_pb2.ChatMessage(
                role=m.role,
                content=m.content,
                tool_calls=[_call_to_proto(c) for c in m.tool_calls],
                tool_call_id=m.tool_call_id,
            )
            for m in conversation.messages
        ],
        tools=[
            model_gateway_pb2.ToolSpec(
                name=t.name,
                description=t.description,
                parameters_json=json.dumps(t.parameters, separators=(",", ":")),
            )
            for t in conversation.tools
        ],
        tool_choice=conversation.tool_choice,
        max_tokens=conversation.max_tokens,
    )


def conversation_from_proto(request: model_gateway_pb2.DecideRequest) -> Conversation:
    """The conversation a ``DecideRequest`` carries, or :class:`InvalidConversation`."""
    if not request.messages:
        raise InvalidConversation("messages must not be empty")
    messages = []
    for index, message in enumerate(request.messages):
        if message.role not in ROLES:
            raise InvalidConversation(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}"
            )
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidConversation(f"messages[{index}] (tool) needs a tool_call_id")
        if message.tool_calls and message.role != "assistant":
            raise InvalidConversation(f"messages[{index}]: only assistant messages call tools")
        messages.append(
            ChatMessage(
                role=message.role,  # type: ignore[arg-type]
                content=message.content,
                tool_calls=tuple(_call_from_proto(c) for c in message.tool_calls),
                tool_call_id=message.tool_call_id,
            )
        )
    tools = []
    names: set[str] = set()
    for index, tool in enumerate(request.tools):
        if not TOOL_NAME.match(tool.name):
            raise InvalidConversation(f"tools[{index}].name must match {TOOL_NAME.pattern}")
        if tool.name in names:
            raise InvalidConversation(f"tools[{index}]: {tool.name!r} is offered twice")
        names.add(tool.name)
        try:
            parameters = json.loads(tool.parameters_json or "{}")
        except ValueError:
            raise InvalidConversation(f"tools[{index}].parameters_json is not JSON") from None
        if not isinstance(parameters, dict):
            raise InvalidConversation(f"tools[{index}].parameters_json is not a JSON object")
        tools.append(ToolSpec(tool.name, tool.description, parameters))
    if request.tool_choice not in ("", "auto", "none"):
        raise InvalidConversation("tool_choice must be 'auto' or 'none'")
    return Conversation(
        messages=tuple(messages),
        tools=tuple(tools),
        tool_choice="none" if request.tool_choice == "none" else "auto",
        max_tokens=request.max_tokens,
    )


def _uint32(value: int) -> int:
    return min(max(value, 0), 0xFFFFFFFF)


def decision_to_proto(result: DecisionResult, request_id: str) -> model_gateway_pb2.DecideResponse:
    """The ``DecideResponse`` for a served decision."""
    decision = result.decision
    return model_gateway_pb2.DecideResponse(
        tool_calls=[_call_to_proto(c) for c in decision.tool_calls],
        content=decision.content,
        finish_reason=decision.finish_reason,
        usage=model_gateway_pb2.TokenUsage(
            prompt_tokens=_uint32(decision.usage.prompt_tokens),
            completion_tokens=_uint32(decision.usage.completion_tokens),
            total_tokens=_uint32(decision.usage.total_tokens),
        ),
        model=result.model,
        backend=result.backend,
        latency_ms=result.latency_ms,
        request_id=request_id,
    )


def decision_from_proto(reply: model_gateway_pb2.DecideResponse) -> DecisionResult:
    """The decision a ``DecideResponse`` carries."""
    return DecisionResult(
        decision=Decision(
            tool_calls=tuple(_call_from_proto(c) for c in reply.tool_calls),
            content=reply.content,
            finish_reason=reply.finish_reason,
            usage=Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens),
        ),
        model=reply.model,
        backend=reply.backend,
        latency_ms=reply.latency_ms,
    )
