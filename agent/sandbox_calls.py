"""The agent's calls to the sandbox: which tools it may run, and running one.

Every call carries the agent's own token and the run's request id (the
client comes from :func:`pagi.http.create_service_client`). Running a tool
never raises: a sandbox that is down, refuses (403, 429, 503, ...), or does
not answer in time becomes a :class:`ToolOutcome` saying so, which the model
then sees as the call's result.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from pagi.http import read_capped
from pagi.logging import log_event

logger = logging.getLogger(__name__)

MAX_TOOL_LIST_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 48 * 1024 * 1024
"""More than the sandbox ever sends: both streams at its 8 MiB cap, JSON-escaped."""


@dataclass(frozen=True)
class SandboxTool:
    """A tool the sandbox lets the agent run."""

    name: str
    description: str
    takes_code: bool
    max_code_bytes: int
    input_files: int = 0
    """Files a call may carry into the run's working dir (0: none)."""
    input_bytes: int = 0
    output_files: int = 0
    """Files under out/ the sandbox returns with their content (0: none)."""


@dataclass(frozen=True)
class InputFile:
    """A file a call brings into the run's working dir."""

    path: str
    data: bytes


@dataclass(frozen=True)
class ToolRequest:
    """One tool run the agent asks of the sandbox."""

    tool: str
    code: str | None = None
    """The program (None for a tool that takes no code)."""
    files: tuple[InputFile, ...] = ()


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call gave: the sandbox's answer, or why there is none."""

    status: int | None
    """The HTTP status of the sandbox's answer (None when it gave none)."""
    body: dict[str, Any]
    error: str | None = None
    error_kind: str | None = None
    round_trip_ms: float = 0.0


class ToolListUnavailable(Exception):
    """The sandbox could not say which tools the agent may run."""


class ToolSandbox(Protocol):
    """The sandbox, as the agent loop uses it (:class:`SandboxCalls`, or a stand-in)."""

    async def list_tools(self, timeout_seconds: float) -> list[SandboxTool]:
        """The tools the agent may run; :class:`ToolListUnavailable` otherwise."""
        ...

    async def run(self, request: ToolRequest, timeout_seconds: float) -> ToolOutcome:
        """Run one tool; never raises but when cancelled."""
        ...


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _detail(body: dict[str, Any] | None, status: int) -> str:
    detail = body.get("detail") if body else None
    if isinstance(detail, str) and detail:
        return detail[:500]
    return f"the sandbox answered {status}"


# Why a status: the model reads error_kind to tell a policy refusal from a bug.
_KINDS = {403: "policy", 404: "rejected", 400: "rejected", 413: "rejected", 422: "rejected"}


class SandboxCalls:
    """The sandbox, as the agent uses it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def list_tools(self, timeout_seconds: float) -> list[SandboxTool]:
        """The tools the agent's policy entry names; :class:`ToolListUnavailable` otherwise."""
        try:
            async with asyncio.timeout(timeout_seconds):
                async with self.client.stream("GET", "/api/v1/tools") as response:
                    raw = await read_capped(response.aiter_bytes(), MAX_TOOL_LIST_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolListUnavailable(
                f"the sandbox did not list the tools within {timeout_seconds:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ToolListUnavailable(
                f"the sandbox is unreachable ({type(exc).__name__})"
            ) from None
        body = _json_object(raw)
        if response.status_code != 200 or body is None:
            raise ToolListUnavailable(
                f"the sandbox did not list the tools: {_detail(body, response.status_code)}"
            )
        tools = []
        for entry in body.get("tools") or []:
            try:
                tools.append(
                    SandboxTool(
                        name=str(entry["name"]),
                        description=str(entry.get("description") or ""),
                        takes_code=bool(entry["takes_code"]),
                        max_code_bytes=int(entry.get("max_code_bytes") or 0),
                        input_files=int(entry.get("input_files") or 0),
                        input_bytes=int(entry.get("input_bytes") or 0),
                        output_files=int(entry.get("output_files") or 0),
                    )
                )
            except (KeyError, TypeError, ValueError):
                log_event(logger, "tool_entry_skipped", logging.WARNING, entry=str(entry)[:200])
        return tools

    async def run(self, request: ToolRequest, timeout_seconds: float) -> ToolOutcome:
        """Run the requested tool in the sandbox; never raises but when cancelled."""
        started = time.perf_counter()
        tool = request.tool
        body: dict[str, Any] = {"tool_name": tool}
        if request.code is not None:
            body["code"] = request.code
        if request.files:
            body["files"] = [
                {"path": f.path, "content": base64.b64encode(f.data).decode("ascii")}
                for f in request.files
            ]
        try:
            async with asyncio.timeout(timeout_seconds):
                async with self.client.stream(
                    "POST", "/api/v1/execute_tool", json=body, timeout=timeout_seconds
                ) as response:
                    raw = await read_capped(response.aiter_bytes(), MAX_RESULT_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            return self._failed(
                f"the sandbox did not answer within {timeout_seconds:g}s; the run was stopped",
                "timeout",
                started,
            )
        except httpx.HTTPError as exc:
            return self._failed(
                f"the sandbox is unreachable ({type(exc).__name__}); nothing ran",
                "unavailable",
                started,
            )
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        answer = _json_object(raw)
        status = response.status_code
        if status == 200 and answer is not None and isinstance(answer.get("result"), dict):
            return ToolOutcome(status, answer, round_trip_ms=elapsed)
        if status == 429:
            retry = response.headers.get("retry-after", "?")
            error = f"the sandbox is busy (retry after {retry} s): {_detail(answer, status)}"
            kind = "busy"
        elif status == 503:
            error = f"the sandbox cannot run tools now: {_detail(answer, status)}"
            kind = "unavailable"
        elif status == 200:
            error, kind = "the sandbox answered something that is not a result", "unavailable"
        else:
            error = f"the sandbox refused the call ({status}): {_detail(answer, status)}"
            kind = _KINDS.get(status, "unavailable")
        log_event(
            logger, "tool_call_failed", logging.WARNING, tool=tool, status=status, error=error
        )
        return ToolOutcome(status, answer or {}, error, kind, elapsed)

    @staticmethod
    def _failed(error: str, kind: str, started: float) -> ToolOutcome:
        log_event(logger, "tool_call_failed", logging.WARNING, error=error)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return ToolOutcome(None, {}, error, kind, elapsed)
