"""The function-calling wire format of chat-completions, both ways.

vLLM, llama.cpp's server, Ollama and hosted APIs take ``tools`` as
``[{"type": "function", "function": {name, description, parameters}}]`` and
answer ``choices[0].message`` with ``content`` and/or ``tool_calls``
(``[{id, type, function: {name, arguments}}]``, ``arguments`` a JSON string).
Servers differ in the details, so reading a reply is lenient where it can
be (arguments sent as an object, content as a list of parts, a missing
call id, the legacy single ``function_call``) and otherwise fails with a
clear :class:`BackendError`, never an exception of another kind.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.backends.base import BackendError, ErrorCode
from gateway.conversation import ChatMessage, Conversation, Decision, ToolCall, Usage

MAX_TOOL_CALLS = 64
"""Most tool calls taken from one reply; the rest are dropped."""
MAX_CALL_ID_CHARS = 128
MAX_NAME_CHARS = 256
CHARS_PER_TOKEN = 4
"""For estimating usage when a server does not report it."""


def _message_to_wire(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def request_body(conversation: Conversation, model: str) -> dict[str, Any]:
    """The ``/chat/completions`` body asking for the next action (not streamed)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message_to_wire(m) for m in conversation.messages],
        "temperature": 0,
        "stream": False,
    }
    if conversation.tools:
        # Sent even with tool_choice "none": a conversation holding tool calls
        # is only valid, for some servers, next to the tools it called.
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in conversation.tools
        ]
        body["tool_choice"] = conversation.tool_choice
    if conversation.max_tokens:
        body["max_tokens"] = conversation.max_tokens
    return body


def _unparseable(reason: str) -> BackendError:
    return BackendError(ErrorCode.INTERNAL, f"unparseable reply from the model server: {reason}")


def _valid(text: str) -> str:
    """``text`` as valid Unicode: JSON may carry lone surrogates, protobuf refuses them."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _text(content: object) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return _valid(content)
    if isinstance(content, list):
        parts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return _valid("".join(parts))
    return ""


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return _valid(value)
    if value is None:
        return ""
    try:
        # Some servers send the arguments as an object rather than JSON text.
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return ""


def _calls(message: dict[str, Any]) -> list[ToolCall]:
    raw = message.get("tool_calls")
    entries = raw if isinstance(raw, list) else []
    if not entries and isinstance(message.get("function_call"), dict):
        entries = [{"function": message["function_call"]}]  # the legacy single call
    calls: list[ToolCall] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries[:MAX_TOOL_CALLS]):
        if not isinstance(entry, dict):
            continue
        function = entry.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        call_id = entry.get("id")
        if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS:
            call_id = f"call_{index}"
        call_id = _valid(call_id)
        while call_id in seen:  # ids answer calls: they must be unique in a turn
            call_id = f"{call_id}_{index}"
        seen.add(call_id)
        calls.append(
            ToolCall(
                id=call_id,
                name=_valid(name[:MAX_NAME_CHARS]) if isinstance(name, str) else "",
                arguments=_arguments(function.get("arguments")),
            )
        )
    return calls


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(data: dict[str, Any], conversation: Conversation, decision_size: int) -> Usage:
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if prompt is None:
        sent = sum(len(m.content) for m in conversation.messages)
        prompt = -(-sent // CHARS_PER_TOKEN)
    if completion is None:
        completion = -(-decision_size // CHARS_PER_TOKEN)
    return Usage(prompt, completion)


def parse_decision(raw: bytes, conversation: Conversation) -> Decision:
    """The next action in a chat-completions reply, or :class:`BackendError` (INTERNAL)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise _unparseable("not JSON") from None
    if not isinstance(data, dict):
        raise _unparseable("not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _unparseable("no choices[0]")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _unparseable("no choices[0].message")
    content = _text(message.get("content"))
    calls = _calls(message) if conversation.may_call_tools else []
    finish_reason = choices[0].get("finish_reason")
    if not isinstance(finish_reason, str):
        finish_reason = "tool_calls" if calls else "stop"
    finish_reason = _valid(finish_reason[:64])
    size = len(content) + sum(len(c.name) + len(c.arguments) for c in calls)
    return Decision(
        tool_calls=tuple(calls),
        content=content,
        finish_reason=finish_reason,
        usage=_usage(data, conversation, size),
    )
