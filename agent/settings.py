"""Settings of the agent."""

from __future__ import annotations

from pydantic import Field, model_validator

from pagi.run_request import Budgets, RunCeilingSettings

KIB = 1024
MIB = 1024 * KIB


class AgentSettings(RunCeilingSettings):
    """The shared settings, the body limit, the calls after a plan, and agent runs."""

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

    # Runs: each budget has a default here and a ceiling (RunCeilingSettings);
    # a request may set its own budget up to the ceiling.
    pagi_agent_run_steps: int = Field(10, ge=1, le=1000, description="Default step budget.")
    pagi_agent_run_deadline_seconds: float = Field(
        120.0, gt=0, le=3600, description="Default wall-clock budget of a run."
    )
    pagi_agent_run_model_tokens: int = Field(
        100_000, ge=1, le=100_000_000, description="Default model token budget."
    )
    pagi_agent_run_tool_output_bytes: int = Field(
        256 * KIB, ge=0, le=1024 * MIB, description="Default budget of tool output bytes."
    )

    pagi_agent_max_concurrent_runs: int = Field(
        16, ge=1, le=1024, description="Runs at once; more get 429 with Retry-After."
    )
    pagi_agent_observation_bytes: int = Field(
        4 * KIB,
        ge=256,
        le=1 * MIB,
        description="Most of a tool's stdout (and, apart, of its stderr) the model sees.",
    )
    pagi_agent_max_calls_per_step: int = Field(
        8, ge=1, le=64, description="Tool calls run per step; more are answered as errors."
    )
    pagi_agent_tool_timeout_seconds: float = Field(
        90.0,
        gt=0,
        le=600,
        description="Deadline of one sandbox call (queue and run), within the run's own.",
    )
    pagi_agent_summary_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Time kept, within a run's deadline, for the last call asking for a summary.",
    )
    pagi_agent_run_file_bytes: int = Field(
        8 * MIB,
        ge=0,
        le=256 * MIB,
        description="Bytes of the files a run's tools returned kept with the run's record;"
        " files beyond are listed without content.",
    )
    pagi_agent_max_conversation_bytes: int = Field(
        480 * KIB,
        ge=16 * KIB,
        le=64 * MIB,
        description="A run whose conversation outgrows this ends (token_budget); keep it"
        " below the gateway's PAGI_GATEWAY_MAX_CONVERSATION_BYTES.",
    )
    pagi_agent_max_run_document_bytes: int = Field(
        960 * KIB,
        ge=16 * KIB,
        le=16 * MIB,
        description="Largest run document sent to memory (older outputs are cut to fit);"
        " keep it below memory's PAGI_MEMORY_MAX_RUN_BYTES.",
    )

    @model_validator(mode="after")
    def _defaults_within_ceilings(self) -> AgentSettings:
        for name in ("steps", "deadline_seconds", "model_tokens", "tool_output_bytes"):
            default = getattr(self, f"pagi_agent_run_{name}")
            ceiling = getattr(self, f"pagi_agent_run_{name}_ceiling")
            if default > ceiling:
                raise ValueError(
                    f"PAGI_AGENT_RUN_{name.upper()} ({default}) is above its ceiling"
                    f" PAGI_AGENT_RUN_{name.upper()}_CEILING ({ceiling})"
                )
        return self

    @property
    def run_defaults(self) -> Budgets:
        """The budgets of a run that asks for none."""
        return Budgets(
            max_steps=self.pagi_agent_run_steps,
            deadline_seconds=self.pagi_agent_run_deadline_seconds,
            max_model_tokens=self.pagi_agent_run_model_tokens,
            max_tool_output_bytes=self.pagi_agent_run_tool_output_bytes,
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
