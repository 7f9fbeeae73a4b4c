"""Settings of the agent."""

from __future__ import annotations

from pydantic import Field

from pagi.settings import CommonSettings


class AgentSettings(CommonSettings):
    """The agent reads only the shared settings plus its body limit."""

    pagi_agent_max_body_bytes: int = Field(
        128 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body accepted (the longest prompt, JSON-escaped, fits).",
    )
