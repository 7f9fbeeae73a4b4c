"""The agent loop: model -> tool calls -> sandbox -> observations -> model, within budgets.

One :class:`AgentRun` works one goal. Each step asks the model gateway for
the next action with the tools the sandbox lets the agent run; tool calls
are checked (a tool not on offer, or arguments that are not what the tool
takes, are answered as errors and never run), run one after the other in
the sandbox, and their capped results go back to the model. The run ends
when the model answers (``completed``), when the model fails
(``model_error``), when it is cancelled, or when a budget runs out or the
same call gives the same result three times (``max_steps``, ``deadline``,
``token_budget``, ``tool_output_budget``, ``stuck``): then one last model
call, without tools, asks for a summary answer. The deadline keeps time
for that call (``summary_seconds``, at most a quarter of the deadline).

The run reports what happens as events (``run.started``, ``model.message``,
``tool.call``, ``tool.result``, ``run.completed``) and calls ``changed``
whenever its record moved on, for the recorder to store it.

What the model is told is in :mod:`agent.prompt`; checking and running one
tool call in :mod:`agent.tool_calls`; the limits and endings in
:mod:`agent.run_limits`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent import run_limits
from agent.budget import MIN_CALL_SECONDS
from agent.observations import clip, observation
from agent.prompt import summary_request, system_prompt
from agent.run_limits import Ending, LoopLimits, RepeatWatch
from agent.run_models import (
    ModelTurn,
    RunReason,
    RunRecord,
    Step,
    TokenCount,
    ToolCallRecord,
    ToolResult,
    utc_now,
)
from agent.sandbox_calls import ToolSandbox
from agent.tool_calls import ToolCalls
from gateway.client import GatewayError
from gateway.conversation import ChatMessage, Conversation, DecisionResult, ToolCall, ToolChoice
from pagi.logging import log_event

logger = logging.getLogger(__name__)

MAX_EVENT_ARGUMENT_CHARS = 4096
MAX_RECORDED_CONTENT_CHARS = 16_384


class Decider(Protocol):
    """The model gateway, as the loop uses it (:class:`gateway.client.GatewayClient`)."""

    async def decide(
        self, conversation: Conversation, timeout_seconds: float | None = None
    ) -> DecisionResult:
        """The next action in ``conversation``."""
        ...


EventSink = Callable[[str, dict[str, Any]], None]
"""Receives ``(event type, data)`` as the run goes."""


class AgentRun:
    """One goal worked to an end. ``record`` shows the run as it stands at any time."""

    def __init__(
        self,
        record: RunRecord,
        decider: Decider,
        sandbox: ToolSandbox,
        limits: LoopLimits,
        emit: EventSink,
        changed: Callable[[], None],
    ) -> None:
        self.record = record
        self._decider = decider
        self._tools = ToolCalls(sandbox, limits)
        self._limits = limits
        self._emit = emit
        self._changed = changed
        self._messages: list[ChatMessage] = []
        self._repeats = RepeatWatch()
        self._conversation_bytes = 0
        self._started = time.monotonic()
        self._work_deadline = 0.0
        self._hard_deadline = 0.0
        self._model_ms = 0.0
        self._tools_ms = 0.0

    # ------------------------------------------------------------------ the run

    async def run(self) -> RunRecord:
        """Work the goal to an end; the finished record (re-raises a cancellation)."""
        budgets = self.record.budgets
        self._started = time.monotonic()
        self._hard_deadline = self._started + budgets.deadline_seconds
        self._work_deadline = self._hard_deadline - run_limits.summary_reserve(
            self._limits, budgets
        )
        try:
            await self._offer_tools()
            self._emit(
                "run.started",
                {
                    "run_id": self.record.id,
                    "goal": self.record.goal,
                    "caller": self.record.caller,
                    "actor": self.record.actor,
                    "tools": self.record.tools,
                    "tools_error": self.record.tools_error,
                    "budgets": budgets.model_dump(),
                    "request_id": self.record.request_id,
                    "started_at": self.record.started_at,
                },
            )
            self._changed()
            ending = await self._work()
            if ending.summarize:
                ending.answer = await self._summarize(ending)
            self._end(ending)
        except asyncio.CancelledError:
            self.cancelled()
            raise
        return self.record

    async def _offer_tools(self) -> None:
        timeout = min(self._limits.list_timeout_seconds, self._time_left(self._work_deadline))
        error = await self._tools.offer(timeout)
        if error is not None:
            self.record.tools_error = error
        offered = list(self._tools.offered.values())
        self.record.tools = [tool.name for tool in offered]
        self._add_message(ChatMessage("system", system_prompt(offered, self.record.tools_error)))
        self._add_message(ChatMessage("user", self.record.goal))

    async def _work(self) -> Ending:
        budgets = self.record.budgets
        usage = self.record.usage
        for index in range(1, budgets.max_steps + 1):
            if time.monotonic() >= self._work_deadline:
                return self._stop("deadline")
            if self._conversation_bytes > self._limits.max_conversation_bytes:
                return run_limits.conversation_too_long(
                    self._conversation_bytes, self._limits.max_conversation_bytes
                )
            step_started = time.perf_counter()
            served = await self._decide("auto", self._work_deadline)
            if isinstance(served, Ending):
                return served
            decision, model_ms = served
            step = Step(index=index, model=self._turn(decision, model_ms), model_ms=model_ms)
            self.record.steps.append(step)
            usage.steps = index
            self._emit_model_message(index, decision, model_ms, summary=False)
            if not decision.decision.tool_calls:
                step.elapsed_ms = _ms_since(step_started)
                return Ending(
                    "completed", "completed", "the model answered", decision.decision.content
                )
            calls = decision.decision.tool_calls
            self._add_message(ChatMessage("assistant", decision.decision.content, calls))
            over_tokens = usage.total_tokens >= budgets.max_model_tokens
            stuck = False
            for position, call in enumerate(calls):
                result = await self._call(index, position, call, over_tokens)
                step.calls.append(
                    ToolCallRecord(
                        id=call.id,
                        tool=call.name,
                        arguments=clip(call.arguments, MAX_EVENT_ARGUMENT_CHARS),
                        result=result,
                    )
                )
                step.tools_ms += result.duration_ms
                usage.tool_calls += 1
                usage.tool_output_bytes += result.output_bytes
                self._add_message(
                    ChatMessage("tool", observation(call.name, call.id, result), (), call.id)
                )
                repeated = self._repeats.repeated(call, result)
                stuck = stuck or repeated
            self._tools_ms += step.tools_ms
            step.elapsed_ms = _ms_since(step_started)
            self._changed()
            if stuck:
                return self._stop("stuck")
            if usage.tool_output_bytes >= budgets.max_tool_output_bytes:
                return self._stop("tool_output_budget")
            if over_tokens or usage.total_tokens >= budgets.max_model_tokens:
                return self._stop("token_budget")
            if time.monotonic() >= self._work_deadline:
                return self._stop("deadline")
        return self._stop("max_steps")

    async def _call(
        self, step: int, position: int, call: ToolCall, over_tokens: bool
    ) -> ToolResult:
        """Check and run one tool call; its result (a refusal when it did not run)."""
        self._emit(
            "tool.call",
            {
                "step": step,
                "call_id": call.id,
                "tool": call.name,
                "arguments": clip(call.arguments, MAX_EVENT_ARGUMENT_CHARS),
            },
        )
        result = await self._tools.result(
            position,
            call,
            over_tokens=over_tokens,
            output_spent=self.record.usage.tool_output_bytes
            >= self.record.budgets.max_tool_output_bytes,
            seconds_left=self._time_left(self._work_deadline),
        )
        self._emit(
            "tool.result",
            {"step": step, "call_id": call.id, "tool": call.name, **result.model_dump()},
        )
        return result

    async def _decide(
        self, choice: ToolChoice, deadline: float
    ) -> tuple[DecisionResult, float] | Ending:
        """Ask the model; its decision and the call's round trip, or how the run ends."""
        left = self._time_left(deadline)
        timeout = min(self._limits.model_timeout_seconds, max(left, MIN_CALL_SECONDS))
        conversation = Conversation(tuple(self._messages), self._tools.specs, choice)
        started = time.perf_counter()
        try:
            served = await self._decider.decide(conversation, timeout)
        except GatewayError as exc:
            self._model_ms += _ms_since(started)
            if exc.code == "deadline_exceeded" and left <= self._limits.model_timeout_seconds:
                return self._stop("deadline")
            return run_limits.model_failed(f"{exc.code}: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a client bug ends the run, not the service
            self._model_ms += _ms_since(started)
            log_event(logger, "model_call_crashed", logging.ERROR, error=repr(exc))
            return run_limits.model_failed(f"the gateway call failed ({type(exc).__name__})")
        model_ms = _ms_since(started)
        self._model_ms += model_ms
        usage = self.record.usage
        used = served.decision.usage
        usage.model_calls += 1
        usage.prompt_tokens += used.prompt_tokens
        usage.completion_tokens += used.completion_tokens
        usage.total_tokens += used.total_tokens
        if self.record.model is None:
            self.record.model, self.record.backend = served.model, served.backend
        return served, model_ms

    async def _summarize(self, ending: Ending) -> str:
        """One last model call, without tools, asking for an answer from what was found."""
        why = run_limits.stop_words(ending.reason, self.record.budgets)
        if self._time_left(self._hard_deadline) <= MIN_CALL_SECONDS:
            ending.detail += "; no time was left to ask the model for a summary"
            return run_limits.fallback_answer(ending.reason)
        self._add_message(ChatMessage("user", summary_request(why)))
        served = await self._decide("none", self._hard_deadline)
        if isinstance(served, Ending):
            ending.detail += f"; the summary call failed ({served.detail})"
            return run_limits.fallback_answer(ending.reason)
        decision, model_ms = served
        self.record.summary = self._turn(decision, model_ms)
        self._emit_model_message(None, decision, model_ms, summary=True)
        return decision.decision.content or run_limits.fallback_answer(ending.reason)

    # ------------------------------------------------------------------ endings

    def cancelled(self) -> None:
        """End the run as cancelled (its client went away, or the agent is stopping)."""
        self._end(run_limits.cancelled())

    def crashed(self, exc: Exception) -> RunRecord:
        """End the run after an unexpected failure of the agent itself."""
        self._end(run_limits.crashed(exc))
        return self.record

    def _stop(self, reason: RunReason) -> Ending:
        return run_limits.stopped(reason, self.record.budgets)

    def _end(self, ending: Ending) -> None:
        record = self.record
        record.status = ending.status
        record.reason = ending.reason
        record.detail = ending.detail
        record.answer = ending.answer
        record.ended_at = utc_now()
        record.duration_ms = round((time.monotonic() - self._started) * 1000, 3)
        record.timings.model_ms = round(self._model_ms, 3)
        record.timings.tools_ms = round(self._tools_ms, 3)
        record.timings.overhead_ms = round(
            max(record.duration_ms - self._model_ms - self._tools_ms, 0.0), 3
        )
        self._emit(
            "run.completed",
            {
                "run_id": record.id,
                "status": record.status,
                "reason": record.reason,
                "detail": record.detail,
                "answer": record.answer,
                "usage": record.usage.model_dump(),
                "duration_ms": record.duration_ms,
                "timings": record.timings.model_dump(),
                "ended_at": record.ended_at,
            },
        )
        log_event(
            logger,
            "run_ended",
            run_id=record.id,
            status=record.status,
            reason=record.reason,
            steps=record.usage.steps,
            tool_calls=record.usage.tool_calls,
            total_tokens=record.usage.total_tokens,
            duration_ms=record.duration_ms,
            caller=record.caller,
        )
        self._changed()

    # ------------------------------------------------------------------ helpers

    def _time_left(self, deadline: float) -> float:
        return max(deadline - time.monotonic(), 0.0)

    def _add_message(self, message: ChatMessage) -> None:
        self._messages.append(message)
        size = len(message.content.encode("utf-8", "surrogatepass"))
        size += sum(len(c.arguments) + len(c.name) + len(c.id) for c in message.tool_calls)
        self._conversation_bytes += size

    @staticmethod
    def _turn(served: DecisionResult, model_ms: float) -> ModelTurn:
        decision = served.decision
        return ModelTurn(
            content=clip(decision.content, MAX_RECORDED_CONTENT_CHARS),
            finish_reason=decision.finish_reason,
            tool_calls=len(decision.tool_calls),
            usage=TokenCount(
                prompt_tokens=decision.usage.prompt_tokens,
                completion_tokens=decision.usage.completion_tokens,
                total_tokens=decision.usage.total_tokens,
            ),
            latency_ms=round(model_ms, 3),
        )

    def _emit_model_message(
        self, step: int | None, served: DecisionResult, model_ms: float, summary: bool
    ) -> None:
        decision = served.decision
        self._emit(
            "model.message",
            {
                "step": step,
                "summary": summary,
                "content": clip(decision.content, MAX_RECORDED_CONTENT_CHARS),
                "tool_calls": [
                    {
                        "id": call.id,
                        "tool": call.name,
                        "arguments": clip(call.arguments, MAX_EVENT_ARGUMENT_CHARS),
                    }
                    for call in decision.tool_calls
                ],
                "finish_reason": decision.finish_reason,
                "usage": {
                    "prompt_tokens": decision.usage.prompt_tokens,
                    "completion_tokens": decision.usage.completion_tokens,
                    "total_tokens": decision.usage.total_tokens,
                },
                "model": served.model,
                "latency_ms": round(model_ms, 3),
            },
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
