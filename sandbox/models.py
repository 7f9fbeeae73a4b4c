"""Request and response bodies of the sandbox's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.spec import LimitName, RunResult

ToolStatus = Literal["ok", "error", "timeout", "limit", "killed", "supervisor_died"]
"""How a run ended, in one word:

- ``ok``: exited with status 0;
- ``error``: exited with a non-zero status;
- ``timeout``: killed at the wall-clock limit (``limit_hit = "wall_time"``);
- ``limit``: stopped by another limit (cpu, memory, file size, processes,
  open files) or its output was cut at the cap (``limit_hit`` says which);
- ``killed``: ended by a signal that no limit explains (e.g. a seccomp kill);
- ``supervisor_died``: the jail's init, which times the tool and reports its
  status, died first; the kernel then ended the tool (``signal`` 9). What the
  tool wrote until then is in ``stdout`` and ``stderr``.
"""


class ExecuteToolRequest(BaseModel):
    """``POST /api/v1/execute_tool``."""

    model_config = ConfigDict(extra="forbid")

    tool_name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[\x21-\x7e]+$",
        description="A tool named in the policy file.",
    )
    code: str | None = Field(
        None, description="The program, for tools that take code (see the policy's `code` key)."
    )


class ToolResult(BaseModel):
    """What one run produced."""

    stdout: str
    stderr: str
    exit_code: int | None = Field(description="None when the tool was killed by a signal.")
    signal: int | None = None
    duration_ms: float
    stdout_truncated: bool
    stderr_truncated: bool
    limit_hit: LimitName | None = None
    seccomp_refusals: int = Field(0, description="System calls the seccomp filter refused.")
    seccomp_denials: dict[str, int] = Field(
        default_factory=dict,
        description="Those refusals by syscall name (the first 64 distinct ones of the run;"
        " the rest under '(other syscalls)').",
    )
    executor: Literal["cold", "warm"]
    tool: str
    policy_version: str


class ExecuteToolResponse(BaseModel):
    """The answer of ``execute_tool``: ``{tool_status, result}``."""

    tool_status: ToolStatus
    result: ToolResult


def _clean_text(text: str) -> str:
    """Text safe to encode as UTF-8 JSON (lone surrogates become U+FFFD)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def tool_status_of(result: RunResult) -> ToolStatus:
    """The one-word outcome of a run (see :data:`ToolStatus`)."""
    if result.supervisor_died:
        return "supervisor_died"
    if result.limit_hit == "wall_time":
        return "timeout"
    if result.limit_hit is not None:
        return "limit"
    if result.signal is not None or result.exit_code is None:
        return "killed"
    return "ok" if result.exit_code == 0 else "error"


def response_of(result: RunResult, tool: str, policy_version: str) -> ExecuteToolResponse:
    """The HTTP answer for a finished run."""
    return ExecuteToolResponse(
        tool_status=tool_status_of(result),
        result=ToolResult(
            stdout=_clean_text(result.stdout),
            stderr=_clean_text(result.stderr),
            exit_code=result.exit_code,
            signal=result.signal,
            duration_ms=round(result.duration_ms, 3),
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            limit_hit=result.limit_hit,
            seccomp_refusals=result.seccomp_refusals,
            seccomp_denials=result.seccomp_denials,
            executor=result.path,
            tool=tool,
            policy_version=policy_version,
        ),
    )


class PolicyStatus(BaseModel):
    """``GET /api/v1/policy``: the version in force and the last refused edit."""

    version: str = Field(description="Content hash (sha256, 16 hex digits) of the policy in force.")
    loaded_at: datetime
    source: str
    last_error: str | None = Field(
        description="Why the file on disk is not in force (invalid, deleted, unreadable)."
    )
    last_error_at: datetime | None = None
    last_checked_at: datetime
    caller: str
    caller_tools: list[str] = Field(description="The tools the calling token's subject may run.")
    summary: dict[str, Any] = Field(description="Tools, callers, limits, service-wide settings.")
