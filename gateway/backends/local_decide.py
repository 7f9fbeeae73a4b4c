"""The built-in backend's next action for an agent: run the goal's Python code blocks.

Deterministic and offline. Given a conversation, :func:`decide_locally`:

1. takes the goal: the last ``user`` message;
2. finds its fenced code blocks marked ```` ```python ````, ```` ```py ````,
   ```` ```python3 ```` or unmarked (```` ``` ````), in order;
3. when the tool ``python`` is on offer and tool calls are allowed, calls it
   for the first block not yet run, one block per turn, with arguments
   ``{"code": <block>}`` and call id ``call_<n>`` (n = the block's number);
4. otherwise answers: each block's output (the ``stdout`` of its tool result,
   stripped, or its ``tool_status``, exit code and ``stderr`` when it failed),
   prefixed ``Block n:`` when there are several, noting blocks left unrun;
   with no code block (or no ``python`` tool) the answer is the local
   planner's numbered plan for the goal.

Token usage is counted as one token per four characters (rounded up) of
the messages sent and of the reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.conversation import ChatMessage, Conversation, Decision, ToolCall, Usage

CODE_TOOL = "python"
PLAN_STEPS = 6
MAX_ANSWER_OUTPUT_CHARS = 4000
CHARS_PER_TOKEN = 4

_FENCE = re.compile(r"```(?P<lang>[^\n`]*)\n(?P<code>.*?)```", re.DOTALL)
_PYTHON_LANGS = frozenset({"", "python", "py", "python3"})


def code_blocks(goal: str) -> list[str]:
    """The Python code blocks of ``goal``, in order (see the module docstring)."""
    blocks = []
    for match in _FENCE.finditer(goal):
        if match.group("lang").strip().lower() in _PYTHON_LANGS and match.group("code").strip():
            blocks.append(match.group("code"))
    return blocks


@dataclass(frozen=True)
class _Progress:
    """Where the conversation stands: the goal, the blocks asked for, their results."""

    goal: str
    calls_made: int
    results: dict[str, str]


def _progress(messages: tuple[ChatMessage, ...]) -> _Progress:
    start = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    goal = messages[start].content if start >= 0 else ""
    later = messages[start + 1 :]
    calls = sum(1 for m in later if m.role == "assistant" and m.tool_calls)
    results = {m.tool_call_id: m.content for m in later if m.role == "tool"}
    return _Progress(goal, calls, results)


def _shorten(text: str) -> str:
    text = text.strip()
    if len(text) <= MAX_ANSWER_OUTPUT_CHARS:
        return text
    return text[: MAX_ANSWER_OUTPUT_CHARS - 1] + "\u2026"


def describe_result(content: str) -> str:
    """One block's outcome from its tool message (an agent observation, JSON when it can be)."""
    try:
        observation = json.loads(content)
    except ValueError:
        return _shorten(content) or "(no output)"
    if not isinstance(observation, dict):
        return _shorten(content)
    if observation.get("error"):
        return f"not run: {observation['error']}"
    stdout = str(observation.get("stdout") or "")
    status = observation.get("tool_status")
    if status == "ok":
        return _shorten(stdout) or "(no output)"
    stderr = _shorten(str(observation.get("stderr") or ""))
    parts = [f"tool_status {status}", f"exit code {observation.get('exit_code')}"]
    described = ", ".join(parts)
    return f"{described}: {stderr}" if stderr else described


Planner = Callable[[str, int], list[str]]
"""The local planner: steps for a goal, at most so many."""


def _answer(progress: _Progress, blocks: list[str], tool_offered: bool, planner: Planner) -> str:
    if not blocks or not tool_offered:
        steps = planner(progress.goal or "the goal", PLAN_STEPS)
        plan = "\n".join(f"{n}. {step}" for n, step in enumerate(steps, start=1))
        if blocks:
            return f"The {CODE_TOOL} tool is not on offer, so no code ran. A plan:\n{plan}"
        return f"A plan:\n{plan}"
    lines = []
    for number in range(1, len(blocks) + 1):
        content = progress.results.get(f"call_{number}")
        if content is None:
            continue
        outcome = describe_result(content)
        lines.append(outcome if len(blocks) == 1 else f"Block {number}: {outcome}")
    unrun = [str(n) for n in range(1, len(blocks) + 1) if f"call_{n}" not in progress.results]
    if unrun:
        lines.append(f"Not run: block {', '.join(unrun)} (the run ended first).")
    return "\n".join(lines)


def _tokens(text_size: int) -> int:
    return -(-text_size // CHARS_PER_TOKEN)


def _size(message: ChatMessage) -> int:
    return len(message.content) + sum(len(c.name) + len(c.arguments) for c in message.tool_calls)


def decide_locally(conversation: Conversation, planner: Planner) -> Decision:
    """The next action in ``conversation`` (see the module docstring); ``planner`` plans."""
    progress = _progress(conversation.messages)
    blocks = code_blocks(progress.goal)
    tool_offered = any(tool.name == CODE_TOOL for tool in conversation.tools)
    prompt_tokens = _tokens(sum(_size(m) for m in conversation.messages))
    if blocks and tool_offered and conversation.may_call_tools:
        if progress.calls_made < len(blocks):
            number = progress.calls_made + 1
            arguments = json.dumps({"code": blocks[number - 1]})
            call = ToolCall(id=f"call_{number}", name=CODE_TOOL, arguments=arguments)
            return Decision(
                tool_calls=(call,),
                finish_reason="tool_calls",
                usage=Usage(prompt_tokens, _tokens(len(arguments))),
            )
    answer = _answer(progress, blocks, tool_offered, planner)
    return Decision(content=answer, usage=Usage(prompt_tokens, _tokens(len(answer))))
