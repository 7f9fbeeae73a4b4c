"""Request, record and answer bodies of agent runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from pagi.run_request import Budgets

RunStatus = Literal["running", "completed", "stopped", "failed", "cancelled"]
"""``running`` until the end; then ``completed`` (the model answered), ``stopped``
(a budget or stuck detection ended it; the answer is a summary), ``failed``
(the model failed) or ``cancelled``."""

RunReason = Literal[
    "completed",
    "max_steps",
    "deadline",
    "token_budget",
    "tool_output_budget",
    "stuck",
    "model_error",
    "cancelled",
]
"""Why a run ended (``None`` while it runs)."""


def utc_now() -> str:
    """Now, as a run's record gives times: UTC, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class TokenCount(BaseModel):
    """Tokens of one model call, or of a run."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RunFile(BaseModel):
    """A file a tool call returned (what it wrote under ``out/``), kept with the run."""

    path: str
    size: int = Field(description="Its size in the run, in bytes.")
    sha256: str | None = None
    content: str | None = Field(
        None,
        description="Base64; null when it was not returned (truncated, skipped) or the"
        " run's file budget (PAGI_AGENT_RUN_FILE_BYTES) was spent.",
    )
    truncated: bool = Field(
        False, description="Listed without content: over the sandbox's or the run's caps."
    )
    skipped: str | None = Field(
        None, description="Why the sandbox never returns it (symlink, fifo, hard_link...)."
    )


class ToolResult(BaseModel):
    """What one tool call gave, as the model saw it (outputs capped)."""

    executed: bool = Field(description="False when nothing ran (see error).")
    tool_status: str | None = Field(
        None, description="The sandbox's one word: ok, error, timeout, limit, killed."
    )
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    limit_hit: str | None = None
    denials: Any = Field(None, description="What the sandbox refused the tool, when it says.")
    seccomp_refusals: int = 0
    output_bytes: int = Field(0, description="stdout and stderr bytes the sandbox returned.")
    error: str | None = Field(None, description="Why the call did not run or did not answer.")
    error_kind: str | None = Field(
        None,
        description="not_offered, bad_arguments, policy, rejected, busy, unavailable,"
        " timeout, budget or deadline.",
    )
    duration_ms: float = Field(0.0, description="The sandbox call's round trip.")
    files: list[RunFile] = Field(
        default_factory=list,
        description="The files the call returned (the model sees their names and sizes).",
    )


class ToolCallRecord(BaseModel):
    """One tool call of a step."""

    id: str
    tool: str
    arguments: str = Field(description="As the model wrote them (capped).")
    result: ToolResult


class ModelTurn(BaseModel):
    """One model call."""

    content: str = ""
    finish_reason: str = ""
    tool_calls: int = 0
    usage: TokenCount = Field(default_factory=TokenCount)
    latency_ms: float = Field(0.0, description="The gateway call's round trip.")


class Step(BaseModel):
    """One turn: the model's calls and their results."""

    index: int
    model: ModelTurn
    calls: list[ToolCallRecord] = Field(default_factory=list)
    elapsed_ms: float = 0.0
    model_ms: float = 0.0
    tools_ms: float = 0.0


class RunUsage(BaseModel):
    """What a run has used of its budgets."""

    steps: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    tool_calls: int = 0
    tool_output_bytes: int = 0


class RunTimings(BaseModel):
    """Where a run's time went, in ms."""

    model_ms: float = 0.0
    tools_ms: float = 0.0
    overhead_ms: float = Field(0.0, description="The rest: the agent's own work.")


class RunRecord(BaseModel):
    """A run: goal, caller, each step's calls and capped results, answer, outcome, usage."""

    id: str
    goal: str
    caller: str = Field(description="Who the run is for: its token's subject.")
    actor: str | None = Field(
        None, description="The service that started it for the caller (the bff, for a person)."
    )
    request_id: str | None
    status: RunStatus
    reason: RunReason | None = None
    detail: str | None = Field(None, description="The reason in words.")
    answer: str | None = None
    budgets: Budgets
    usage: RunUsage = Field(default_factory=RunUsage)
    tools: list[str] = Field(default_factory=list, description="The tools offered to the model.")
    tools_error: str | None = Field(None, description="Why no tools could be offered.")
    model: str | None = None
    backend: str | None = None
    steps: list[Step] = Field(default_factory=list)
    summary: ModelTurn | None = Field(
        None, description="The last call, without tools, that asked for a summary answer."
    )
    started_at: str
    ended_at: str | None = None
    duration_ms: float = 0.0
    timings: RunTimings = Field(default_factory=RunTimings)
    trimmed: bool = Field(
        False, description="True when older outputs were cut so the record fits in memory."
    )


class RunAnswer(BaseModel):
    """``POST /api/v1/runs`` and ``GET /api/v1/runs/{id}``."""

    service: Literal["agent"] = "agent"
    run: RunRecord
    stored: bool = Field(description="Whether memory holds this state of the run.")
    store_error: str | None = None


class RunListItem(BaseModel):
    """One run of a list."""

    id: str
    status: str
    reason: str | None = None
    goal: str = Field(description="Its first 200 characters.")
    caller: str | None = None
    actor: str | None = None
    answer: str | None = Field(None, description="Its first 200 characters.")
    steps: int = 0
    total_tokens: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: float = 0.0


class RunList(BaseModel):
    """``GET /api/v1/runs``: runs, the most recently started first."""

    service: Literal["agent"] = "agent"
    count: int
    runs: list[RunListItem]
