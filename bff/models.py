"""Request and response bodies of the bff."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EchoRequest(BaseModel):
    """``POST /api/v1/echo``: a wiring check."""

    model_config = ConfigDict(extra="forbid")

    ping: str = Field(..., max_length=4096, examples=["agent"])
    request_id: str | None = Field(None, max_length=128)


class EchoResponse(BaseModel):
    """The echo: what was received, and the request id it was received under."""

    service: Literal["bff"] = "bff"
    received: EchoRequest
    request_id: str | None


class DashboardData(BaseModel):
    """One entry per downstream: its answer, or ``{"error": ...}`` when it failed."""

    python_agent: dict[str, Any]
    rust_sandbox: dict[str, Any]
    memory: dict[str, Any]


class DashboardResponse(BaseModel):
    """``GET /api/v1/agi/dashboard-data``."""

    service: Literal["bff"] = "bff"
    status: Literal["ok", "degraded"]
    request_id: str | None
    data: DashboardData
    failed_services: list[str] = Field(
        default_factory=list, description="Services whose call failed or timed out."
    )
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="How long each downstream call took."
    )
    latest_run: dict[str, Any] | None = Field(
        None,
        description="The agent's most recent run (id, status, reason, goal, answer, steps,"
        " total_tokens, started_at, ended_at, duration_ms), null when there is none,"
        " or {'error': ...} when memory could not say.",
    )
