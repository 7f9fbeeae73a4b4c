"""Settings of the agent."""

from __future__ import annotations

from pydantic import Field

from pagi.settings import CommonSettings


class AgentSettings(CommonSettings):
    """The shared settings, the body limit and the budget of the calls after a plan."""

    pagi_agent_max_body_bytes: int = Field(
        128 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted (the longest prompt, JSON-escaped, fits).",
    )
    pagi_agent_wiring_timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=600,
        description="Deadline of the bff echo and the memory write after a plan;"
        " defaults to half of REQUEST_TIMEOUT_SECONDS.",
    )

    @property
    def wiring_timeout_seconds(self) -> float:
        """The deadline of the echo and memory calls that follow a plan.

        The agent is itself called (by the bff) with REQUEST_TIMEOUT_SECONDS:
        its own follow-up calls must end well inside that, so a stalled bff or
        memory shows as a degraded plan instead of the agent timing out.
        """
        if self.pagi_agent_wiring_timeout_seconds is not None:
            return self.pagi_agent_wiring_timeout_seconds
        return self.request_timeout_seconds / 2
