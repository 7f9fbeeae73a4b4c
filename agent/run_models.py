"""Request, record and answer bodies of agent runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    create_model,
)

from agent.models import NOT_BLANK_PATTERN

MAX_GOAL_CHARS = 32_768
RUN_ID_PATTERN = r"^run_[0-9a-f]{32}$"

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


def _json_integer(value: object) -> object:
    """An integer as JSON Schema has it (``10`` or ``10.0``), never a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


def json_int(ge: int, le: int) -> Any:
    """An integer within ``ge..le`` (the bounds inside, so the JSON schema states them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_integer)]


STEPS_WORDS = "Model turns."
DEADLINE_WORDS = "Wall-clock seconds of the whole run."
TOKENS_WORDS = "Tokens of every model call together."
OUTPUT_WORDS = "stdout and stderr bytes of every tool run together."


class BudgetRequest(BaseModel):
    """Budgets a request asks for; each left out takes the agent's default.

    Each is checked against the agent's ceiling (422 beyond it).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_steps: json_int(1, 1000) | None = Field(None, description=STEPS_WORDS)
    deadline_seconds: StrictFloat | None = Field(None, gt=0, le=3600, description=DEADLINE_WORDS)
    max_model_tokens: json_int(1, 100_000_000) | None = Field(None, description=TOKENS_WORDS)
    max_tool_output_bytes: json_int(0, 1024 * 1024 * 1024) | None = Field(
        None, description=OUTPUT_WORDS
    )


class RunRequest(BaseModel):
    """``POST /api/v1/runs`` and ``/api/v1/runs/stream``."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(
        ...,
        min_length=1,
        max_length=MAX_GOAL_CHARS,
        pattern=NOT_BLANK_PATTERN,
        description=f"What to achieve; 1 to {MAX_GOAL_CHARS} characters, not only blanks.",
        examples=["What is the 20th Fibonacci number?\n```python\nprint(6765)\n```"],
    )
    budgets: BudgetRequest = Field(default_factory=BudgetRequest)


class Budgets(BaseModel):
    """The budgets a run works within."""

    max_steps: int
    deadline_seconds: float
    max_model_tokens: int
    max_tool_output_bytes: int


def run_request_model(ceilings: Budgets) -> type[RunRequest]:
    """:class:`RunRequest` with each budget bounded by its ceiling (schema and validation)."""
    budgets = create_model(
        "BudgetRequest",
        __base__=BudgetRequest,
        max_steps=(
            json_int(1, ceilings.max_steps) | None,
            Field(None, description=STEPS_WORDS),
        ),
        deadline_seconds=(
            StrictFloat | None,
            Field(None, gt=0, le=ceilings.deadline_seconds, description=DEADLINE_WORDS),
        ),
        max_model_tokens=(
            json_int(1, ceilings.max_model_tokens) | None,
            Field(None, description=TOKENS_WORDS),
        ),
        max_tool_output_bytes=(
            json_int(0, ceilings.max_tool_output_bytes) | None,
            Field(None, description=OUTPUT_WORDS),
        ),
    )
    return create_model(
        "RunRequest", __base__=RunRequest, budgets=(budgets, Field(default_factory=budgets))
    )


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
