"""Stand-ins for the model gateway and the sandbox, as the agent loop sees them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.loop import AgentRun
from agent.run_limits import LoopLimits
from agent.run_models import RunRecord
from agent.sandbox_calls import (
    InputFile,
    SandboxTool,
    ToolListUnavailable,
    ToolOutcome,
    ToolRequest,
)
from gateway.client import GatewayError
from gateway.conversation import Conversation, Decision, DecisionResult, ToolCall, Usage
from pagi.run_request import Budgets

PYTHON = SandboxTool("python", "Runs Python.", takes_code=True, max_code_bytes=65536)
DEMO = SandboxTool("demo", "Says hello.", takes_code=False, max_code_bytes=0)

Script = Callable[[Conversation, int], Decision]
"""Gives the model's decision for a conversation and the call's number (0, 1, ...)."""


def calls(*pairs: tuple[str, object], prefix: str = "c") -> Decision:
    """A decision calling tools; each pair is (tool name, arguments or their JSON text)."""
    made = []
    for index, (name, arguments) in enumerate(pairs):
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        made.append(ToolCall(f"{prefix}{index}", name, text))
    return Decision(tool_calls=tuple(made), finish_reason="tool_calls", usage=Usage(10, 5))


def answer(text: str) -> Decision:
    return Decision(content=text, usage=Usage(10, 5))


@dataclass
class ScriptedDecider:
    """Answers from a script; records every conversation it was given."""

    script: Script
    delay: float = 0.0
    error: GatewayError | None = None
    fail_from_call: int | None = None
    seen: list[Conversation] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)

    async def decide(
        self, conversation: Conversation, timeout_seconds: float | None = None
    ) -> DecisionResult:
        number = len(self.seen)
        self.seen.append(conversation)
        self.timeouts.append(timeout_seconds)
        if self.delay:
            try:
                async with asyncio.timeout(timeout_seconds):
                    await asyncio.sleep(self.delay)
            except TimeoutError:
                raise GatewayError("deadline_exceeded", "no answer in time") from None
        if self.error is not None and (
            self.fail_from_call is None or number >= self.fail_from_call
        ):
            raise self.error
        if conversation.tool_choice == "none":
            decision = answer(f"summary after {number} calls")
        else:
            decision = self.script(conversation, number)
        return DecisionResult(decision, model="scripted", backend="fake", latency_ms=0.1)


@dataclass
class FakeSandbox:
    """Lists tools and 'runs' them: stdout says what ran, unless told otherwise."""

    tools: list[SandboxTool] = field(default_factory=lambda: [PYTHON, DEMO])
    list_error: str | None = None
    outcome: Callable[[str, str | None], ToolOutcome] | None = None
    delay: float = 0.0
    runs: list[tuple[str, str | None]] = field(default_factory=list)
    cancelled: list[tuple[str, str | None]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    files: list[tuple[InputFile, ...]] = field(default_factory=list)

    async def list_tools(self, timeout_seconds: float) -> list[SandboxTool]:
        if self.list_error is not None:
            raise ToolListUnavailable(self.list_error)
        return list(self.tools)

    async def run(self, request: ToolRequest, timeout_seconds: float) -> ToolOutcome:
        tool, code = request.tool, request.code
        self.runs.append((tool, code))
        self.files.append(request.files)
        self.timeouts.append(timeout_seconds)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append((tool, code))
            raise
        if self.outcome is not None:
            return self.outcome(tool, code)
        return ok(f"ran {tool}: {code}\n")


def ok(stdout: str, stderr: str = "", **result: Any) -> ToolOutcome:
    body = {
        "tool_status": "ok",
        "result": {"stdout": stdout, "stderr": stderr, "exit_code": 0, **result},
    }
    return ToolOutcome(200, body, round_trip_ms=1.0)


LIMITS = LoopLimits(
    model_timeout_seconds=5.0,
    tool_timeout_seconds=30.0,
    list_timeout_seconds=1.0,
    summary_seconds=1.0,
    observation_bytes=256,
    max_calls_per_step=3,
    max_conversation_bytes=200_000,
)


@dataclass
class Recorded:
    """A run made with the fakes, with what it emitted."""

    run: AgentRun
    events: list[tuple[str, dict[str, Any]]]
    changes: list[int]

    @property
    def record(self) -> RunRecord:
        return self.run.record

    def types(self) -> list[str]:
        return [event for event, _ in self.events]


def make_run(
    decider: ScriptedDecider,
    sandbox: FakeSandbox,
    goal: str = "work the goal",
    limits: LoopLimits = LIMITS,
    **budgets: Any,
) -> Recorded:
    values = {
        "max_steps": 5,
        "deadline_seconds": 30.0,
        "max_model_tokens": 100_000,
        "max_tool_output_bytes": 100_000,
    }
    values.update(budgets)
    record = RunRecord(
        id="run_" + "0" * 32,
        goal=goal,
        caller="operator",
        request_id="rid-1",
        status="running",
        budgets=Budgets(**values),
        started_at="2026-01-01T00:00:00+00:00",
    )
    events: list[tuple[str, dict[str, Any]]] = []
    changes: list[int] = []
    run = AgentRun(
        record,
        decider,
        sandbox,
        limits,
        emit=lambda event, data: events.append((event, data)),
        changed=lambda: changes.append(len(events)),
    )
    return Recorded(run, events, changes)


def tool_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """The observations a conversation carries, decoded."""
    return [json.loads(m.content) for m in conversation.messages if m.role == "tool"]
