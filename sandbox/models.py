"""Request and response bodies of the sandbox's HTTP API."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.files_out import OutputCollection
from sandbox.spec import Denial, LimitName, NetworkUsage, RunResult

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


class InputFile(BaseModel):
    """A file the tool finds in its working dir when it starts."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="Relative to the working dir (`data.csv`, `data/2024.csv`); no `..`."
    )
    content: str = Field(description="The bytes of the file, base64 (RFC 4648, padded).")


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
    files: list[InputFile] | None = Field(
        None,
        description="Input files, written into the run's working dir before the tool starts"
        " (the tool's `files` limits of the policy apply).",
    )


class OutputFile(BaseModel):
    """A file the tool left under ``out/`` in its working dir."""

    path: str = Field(description="`out/...`, as the tool named it.")
    size: int = Field(description="Its size in bytes.")
    sha256: str | None = Field(None, description="Of the content; null when none is returned.")
    content: str | None = Field(None, description="Base64; null when truncated or skipped.")
    truncated: bool = Field(
        False, description="Over the policy's output_files or output_bytes cap: listed, not sent."
    )
    skipped: str | None = Field(
        None,
        description="Why this entry is never returned: symlink, hard_link, fifo, socket,"
        " device, directory_limit, other_filesystem, changed, unreadable, invalid_name,"
        " not_a_directory (out itself).",
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
    denials: list[Denial] = Field(
        default_factory=list,
        description="What the jail refused, in words, with the policy key that would allow"
        " it (or that nothing can); reported by the jail's supervisor, never by the tool."
        " Empty when nothing was refused.",
    )
    executor: Literal["cold", "warm"]
    tool: str
    policy_version: str
    network: NetworkUsage | None = Field(
        None,
        description="Traffic through the egress proxy: connections, bytes each way, and"
        " each refused request (layer network: host, port, reason, the rule that decided);"
        " null: the tool has no network table.",
    )
    files: list[OutputFile] | None = Field(
        None, description="What the tool left under out/ (null: the run returns no files)."
    )
    files_unlisted: int = Field(
        0, description="Entries under out/ beyond the listing ceiling, counted but not listed."
    )


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


def output_files_of(collection: OutputCollection) -> list[OutputFile]:
    """The result's ``files``: each collected entry, its content in base64."""
    return [
        OutputFile(
            path=entry.path,
            size=entry.size,
            sha256=entry.sha256,
            content=base64.b64encode(entry.data).decode("ascii")
            if entry.data is not None
            else None,
            truncated=entry.truncated,
            skipped=entry.skipped,
        )
        for entry in collection.files
    ]


def response_of(
    result: RunResult, tool: str, policy_version: str, files: OutputCollection | None = None
) -> ExecuteToolResponse:
    """The HTTP answer for a finished run (with the files collected from out/, if any)."""
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
            denials=result.denials,
            executor=result.path,
            network=result.network,
            tool=tool,
            policy_version=policy_version,
            files=output_files_of(files) if files is not None else None,
            files_unlisted=files.unlisted if files is not None else 0,
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
