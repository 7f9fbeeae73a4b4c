"""The agent-run request: the agent takes it, the bff checks it the same way before passing it on.

Both build the request model from the same ceilings (:class:`RunCeilingSettings`,
read from the same variables), so the bff refuses with 422 exactly what the
agent would, and both publish the same schema; the run's event stream is
described once here too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, create_model

from pagi.blank import non_blank_text
from pagi.settings import CommonSettings

KIB = 1024
MIB = 1024 * KIB

MAX_GOAL_CHARS = 32_768
RUN_ID_PATTERN = r"^run_[0-9a-f]{32}$"

RUN_EVENT_TYPES = ("run.started", "model.message", "tool.call", "tool.result", "run.completed")
"""The events of a run's stream, in the order they come."""

SSE_RUN_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "1, 2, 3, ... in the order of the run."},
        "event": {"type": "string", "enum": list(RUN_EVENT_TYPES)},
        "data": {"type": "string", "description": "One line of JSON."},
    },
    "required": ["id", "event", "data"],
}


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

    goal: str = non_blank_text(
        MAX_GOAL_CHARS,
        "What to achieve",
        "What is the 20th Fibonacci number?\n```python\nprint(6765)\n```",
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


class RunCeilingSettings(CommonSettings):
    """The most a run request may ask of each budget.

    Read by the agent, which enforces them, and by the bff, which checks a
    run request the same way before passing it on: both take them from the
    same variables.
    """

    pagi_agent_run_steps_ceiling: int = Field(50, ge=1, le=1000)
    pagi_agent_run_deadline_seconds_ceiling: float = Field(600.0, gt=0, le=3600)
    pagi_agent_run_model_tokens_ceiling: int = Field(1_000_000, ge=1, le=100_000_000)
    pagi_agent_run_tool_output_bytes_ceiling: int = Field(4 * MIB, ge=0, le=1024 * MIB)

    @property
    def run_ceilings(self) -> Budgets:
        """The four ceilings as budgets."""
        return Budgets(
            max_steps=self.pagi_agent_run_steps_ceiling,
            deadline_seconds=self.pagi_agent_run_deadline_seconds_ceiling,
            max_model_tokens=self.pagi_agent_run_model_tokens_ceiling,
            max_tool_output_bytes=self.pagi_agent_run_tool_output_bytes_ceiling,
        )
