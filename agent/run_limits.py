"""What bounds a run and how it ends: limits, stop conditions, the endings themselves.

A run stops (``stopped``) when a budget runs out (``max_steps``, ``deadline``,
``token_budget``, ``tool_output_budget``) or when the same call gives the
same result :data:`STUCK_REPEATS` times (``stuck``); a stopped run's answer
comes from one last model call without tools, for which the deadline keeps
``summary_seconds`` (at most :data:`MAX_SUMMARY_SHARE` of it). A failing
model ends it ``failed``, and a run that never got an answer from the model
answers with :func:`fallback_answer`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from agent.observations import outcome_signature
from agent.run_models import RunReason, RunStatus, ToolResult
from gateway.conversation import ToolCall
from pagi.run_request import Budgets

STOP_WORDS: dict[str, str] = {
    "max_steps": "the step budget ({max_steps} steps) is spent",
    "deadline": "its deadline ({deadline_seconds:g} s) is near",
    "token_budget": "the model token budget ({max_model_tokens} tokens) is spent",
    "tool_output_budget": "the tool output budget ({max_tool_output_bytes} bytes) is spent",
    "stuck": "the same tool call gave the same result {repeats} times",
}
STUCK_REPEATS = 3
MAX_SUMMARY_SHARE = 0.25


@dataclass(frozen=True)
class LoopLimits:
    """What bounds a run besides its budgets (from the agent's settings)."""

    model_timeout_seconds: float
    tool_timeout_seconds: float
    list_timeout_seconds: float
    summary_seconds: float
    observation_bytes: int
    max_calls_per_step: int
    max_conversation_bytes: int
    file_bytes: int = 8 * 1024 * 1024
    """File contents a run keeps with its record, all calls together."""


@dataclass
class Ending:
    """How a run ends; with ``summarize``, the answer comes from one last model call."""

    status: RunStatus
    reason: RunReason
    detail: str
    answer: str | None = None
    summarize: bool = False


def summary_reserve(limits: LoopLimits, budgets: Budgets) -> float:
    """The seconds at the end of the deadline kept for the summary call."""
    return min(limits.summary_seconds, budgets.deadline_seconds * MAX_SUMMARY_SHARE)


def stop_words(reason: RunReason, budgets: Budgets) -> str:
    """Why a run stopped, in words naming the budget."""
    return STOP_WORDS[reason].format(**budgets.model_dump(), repeats=STUCK_REPEATS)


def stopped(reason: RunReason, budgets: Budgets) -> Ending:
    """A budget ran out (or the run is stuck): it ends with a summary answer."""
    return Ending("stopped", reason, stop_words(reason, budgets), summarize=True)


def conversation_too_long(size: int, limit: int) -> Ending:
    """The conversation outgrew what the model is sent: no summary call can carry it."""
    return Ending(
        "stopped",
        "token_budget",
        f"the conversation reached {size} bytes, more than the model is sent ({limit})",
        answer=fallback_answer("token_budget"),
    )


def model_failed(detail: str) -> Ending:
    """The model gateway failed the run."""
    return _failed(f"the model gateway failed: {detail}")


def crashed(exc: Exception) -> Ending:
    """The agent itself failed while working the run."""
    return _failed(f"the agent failed while working the run ({type(exc).__name__})")


def _failed(detail: str) -> Ending:
    # Both count as the model's failure for the caller: the run has no answer.
    return Ending("failed", "model_error", detail, answer=fallback_answer("model_error"))


def cancelled() -> Ending:
    """Its client went away, or the agent is stopping."""
    return Ending("cancelled", "cancelled", "the run was cancelled")


def fallback_answer(reason: str) -> str:
    """The answer of a run that ended before the model gave one."""
    return f"The run ended ({reason}) before the model gave an answer."


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except (ValueError, RecursionError):
        return arguments


class RepeatWatch:
    """Notices a run going round in circles: the same call giving the same result again."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def repeated(self, call: ToolCall, result: ToolResult) -> bool:
        """Count this call and its result; whether they have now come STUCK_REPEATS times."""
        key = f"{call.name}\0{_canonical(call.arguments)}\0{outcome_signature(result)}"
        self._seen[key] += 1
        return self._seen[key] >= STUCK_REPEATS
