"""Settings of the bff."""

from __future__ import annotations

from pydantic import Field

from agent.settings import RunCeilingSettings

DEFAULT_DASHBOARD_PROMPT = "Plan a health review of the PAGI stack for the operations dashboard"


class BffSettings(RunCeilingSettings):
    """Whether the dashboard needs a token, what it asks the agent, and the agent's run
    ceilings (checked before a run request is passed on)."""

    pagi_bff_dashboard_require_token: bool = Field(
        False, description="Require a token (audience bff) on GET /api/v1/agi/dashboard-data."
    )
    pagi_bff_dashboard_prompt: str = Field(
        DEFAULT_DASHBOARD_PROMPT,
        min_length=1,
        max_length=8192,
        description="The prompt dashboard-data sends to the agent's plan endpoint.",
    )
