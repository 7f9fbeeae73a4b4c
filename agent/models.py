"""Request and response bodies of the agent."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pagi.blank import non_blank_text

MAX_PROMPT_CHARS = 8192


class PlanRequest(BaseModel):
    """``POST /api/v1/plan`` and ``/api/v1/plan/stream``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = non_blank_text(
        MAX_PROMPT_CHARS, "What to plan", "Generate a 3-step plan to solve X"
    )


class LlmResponse(BaseModel):
    """What the model gateway answered, and how long the round trip took."""

    model: str
    backend: str
    latency_ms: float = Field(..., description="The gateway's own measure of the model call.")
    round_trip_ms: float = Field(..., description="The agent's measure of the gRPC call.")
    step_count: int


class StoredPlan(BaseModel):
    """The memory record the plan was stored as."""

    record_id: str
    created_at: str


class DownstreamFailure(BaseModel):
    """A downstream call that failed; the plan is still returned."""

    model_config = ConfigDict(extra="allow")

    error: str
    status_code: int | None = None
    detail: Any = None


class PlanResponse(BaseModel):
    """``POST /api/v1/plan``: the plan, the gateway's answer and the wiring checks."""

    service: Literal["agent"] = "agent"
    status: Literal["ok", "degraded"]
    plan: list[str]
    llm_response: LlmResponse
    bff_echo: dict[str, Any] = Field(
        ..., description="The bff's echo answer, or {'error': ...} when the echo failed."
    )
    memory: StoredPlan | DownstreamFailure = Field(
        ..., description="Where the plan was stored, or {'error': ...} when storing failed."
    )
