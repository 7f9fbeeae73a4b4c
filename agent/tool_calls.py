"""One tool call of a run: checked, run in the sandbox, its result capped.

A call is refused, and nothing runs, when it names a tool not on offer, goes
beyond the calls one step may make, comes after the token or tool output
budget ran out or too close to the deadline, or passes arguments the tool
does not take (not a JSON object, no ``code`` for a tool that takes code,
keys it does not know, ``files`` that are not path and text pairs). The
model reads the refusal as the call's result, with its ``error_kind``.
"""

from __future__ import annotations

import json

from agent.budget import MIN_CALL_SECONDS
from agent.observations import clip, refusal, result_of
from agent.prompt import tool_spec
from agent.run_limits import LoopLimits
from agent.run_models import ToolResult
from agent.sandbox_calls import (
    InputFile,
    SandboxTool,
    ToolListUnavailable,
    ToolRequest,
    ToolSandbox,
)
from gateway.conversation import TOOL_NAME, ToolCall, ToolSpec


def code_of(call: ToolCall, tool: SandboxTool) -> str | None | ToolResult:
    """The code a call passes to ``tool`` (None for a tool without code), or its refusal."""
    text = call.arguments.strip()
    try:
        arguments = json.loads(text) if text else {}
    except ValueError as exc:
        message = getattr(exc, "msg", str(exc))
        return refusal(
            f"the arguments are not valid JSON ({message}); send a JSON object", "bad_arguments"
        )
    except RecursionError:
        return refusal("the arguments nest too deeply; send a JSON object", "bad_arguments")
    if not isinstance(arguments, dict):
        return refusal("the arguments must be a JSON object", "bad_arguments")
    if not tool.takes_code:
        if arguments:
            return refusal(f"{tool.name} takes no arguments; send {{}}", "bad_arguments")
        return None
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        return refusal(
            f'{tool.name} needs {{"code": "<program>"}} with a non-empty string', "bad_arguments"
        )
    accepted = ("code", "files") if tool.input_files else ("code",)
    extra = sorted(str(key) for key in arguments if key not in accepted)
    if extra:
        takes = "code and files" if tool.input_files else "only code"
        return refusal(
            f"{tool.name} takes {takes}; unexpected: {', '.join(extra[:5])}", "bad_arguments"
        )
    return code


def files_of_call(call: ToolCall) -> tuple[InputFile, ...] | ToolResult:
    """The input files a call passes (``files``: path and text), or its refusal.

    Called once :func:`code_of` accepted the call's arguments (a JSON object
    whose ``files`` the tool takes); the sandbox checks paths and sizes.
    """
    text = call.arguments.strip()
    entries = json.loads(text).get("files", []) if text else []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("path"), str)
        and isinstance(e.get("text"), str)
        and set(e) == {"path", "text"}
        for e in entries
    ):
        return refusal(
            'files must be a list of {"path": "<relative path>", "text": "<content>"}',
            "bad_arguments",
        )
    return tuple(InputFile(e["path"], e["text"].encode("utf-8", "surrogatepass")) for e in entries)


def request_of(call: ToolCall, tool: SandboxTool) -> ToolRequest | ToolResult:
    """What the sandbox is asked to run for a call of ``tool``, or the call's refusal."""
    code = code_of(call, tool)
    if isinstance(code, ToolResult):
        return code
    files: tuple[InputFile, ...] | ToolResult = ()
    if tool.input_files and code is not None:
        files = files_of_call(call)
        if isinstance(files, ToolResult):
            return files
    return ToolRequest(tool.name, code, files)


class ToolCalls:
    """The tools one run offers the model, and its calls of them."""

    def __init__(self, sandbox: ToolSandbox, limits: LoopLimits) -> None:
        self._sandbox = sandbox
        self._limits = limits
        self.offered: dict[str, SandboxTool] = {}
        self.specs: tuple[ToolSpec, ...] = ()
        self._file_bytes_kept = 0

    async def offer(self, timeout_seconds: float) -> str | None:
        """Ask the sandbox which tools the run may call; why there are none when it can't say.

        Tools whose names the model could not call are left out.
        """
        error = None
        try:
            tools = await self._sandbox.list_tools(timeout_seconds)
        except ToolListUnavailable as exc:
            error = str(exc)
            tools = []
        usable = [tool for tool in tools if TOOL_NAME.match(tool.name)]
        self.offered = {tool.name: tool for tool in usable}
        self.specs = tuple(tool_spec(tool) for tool in usable)
        return error

    async def result(
        self,
        position: int,
        call: ToolCall,
        *,
        over_tokens: bool,
        output_spent: bool,
        seconds_left: float,
    ) -> ToolResult:
        """Check the call (the ``position``-th of its step) and run it; a refusal if not run."""
        tool = self.offered.get(call.name)
        if tool is None:
            offered = ", ".join(self.offered) or "none"
            name = clip(call.name, 100)
            return refusal(
                f"no tool named {name!r} is on offer (the tools are: {offered}); nothing ran",
                "not_offered",
            )
        if position >= self._limits.max_calls_per_step:
            return refusal(
                f"not run: at most {self._limits.max_calls_per_step} tool calls per step", "budget"
            )
        if over_tokens:
            return refusal("not run: the model token budget is spent", "budget")
        if output_spent:
            return refusal("not run: the tool output budget is spent", "budget")
        if seconds_left <= MIN_CALL_SECONDS:
            return refusal("not run: the run's deadline is near", "deadline")
        request = request_of(call, tool)
        if isinstance(request, ToolResult):
            return request
        timeout = min(self._limits.tool_timeout_seconds, seconds_left)
        outcome = await self._sandbox.run(request, timeout)
        room = max(self._limits.file_bytes - self._file_bytes_kept, 0)
        result = result_of(outcome, self._limits.observation_bytes, room)
        self._file_bytes_kept += sum(f.size for f in result.files if f.content is not None)
        return result
