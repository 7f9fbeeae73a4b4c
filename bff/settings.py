"""Settings of the bff."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pagi.run_request import RunCeilingSettings

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

    # The console (bff/console): sessions, sign-in links, the tool form's deadline.
    pagi_console_session_seconds: int = Field(
        8 * 3600, ge=60, le=24 * 3600, description="Longest a console session lasts."
    )
    pagi_console_idle_seconds: int = Field(
        1800, ge=60, le=24 * 3600, description="A session unused this long ends."
    )
    pagi_console_sign_in_max_seconds: int = Field(
        600, ge=10, le=3600, description="The longest-lived sign-in link accepted."
    )
    pagi_console_max_sessions: int = Field(
        256, ge=1, le=100_000, description="Sessions kept at once (the oldest ends first)."
    )
    pagi_console_secure_cookie: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Mark the session cookie Secure: `auto` when the request came over HTTPS.",
    )
    pagi_console_tool_timeout_seconds: float = Field(
        90.0, gt=0, le=600, description="How long the console waits for one tool run."
    )
