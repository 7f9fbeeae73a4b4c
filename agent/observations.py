"""A tool call's result as the model reads it: capped, delimited, and saying what happened.

The content of the ``tool`` message is one JSON object, so nothing a tool
prints can pass for the agent's words: its output is a JSON string value,
cut (head and tail kept) to the configured size. The object carries the
call it answers and either the run's outcome (``tool_status``, ``exit_code``,
``stdout``, ``stderr``, what was cut, the limit hit, what the sandbox
denied) or an ``error`` with its ``error_kind``, so the model can tell a
policy refusal from a failing program. For example::

    {"tool": "python", "call_id": "call_1", "tool_status": "error",
     "exit_code": 1, "stdout": "", "stderr": "Traceback ...",
     "stdout_truncated": false, "stderr_truncated": false}

    {"tool": "shell", "call_id": "x", "error": "no tool named 'shell' is on
     offer (the tools are: demo, python); nothing ran", "error_kind": "not_offered"}
"""

from __future__ import annotations

import json
from typing import Any

from agent.run_models import RunFile, ToolResult
from agent.sandbox_calls import ToolOutcome

HEAD_SHARE = 0.75
"""Of a cut output, this share is kept from its start, the rest from its end (tracebacks)."""


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` within ``limit`` UTF-8 bytes (head and tail kept), and whether it was cut."""
    if len(text) <= limit // 4:
        return text, False  # fits whatever its characters
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text, False
    marker = f"\n[... {len(data) - limit} bytes cut ...]\n"
    room = max(limit - len(marker), 0)
    head = int(room * HEAD_SHARE)
    tail = room - head
    kept = data[:head].decode("utf-8", "ignore") + marker
    if tail:
        kept += data[-tail:].decode("utf-8", "ignore")
    return kept, True


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _valid(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def refusal(error: str, kind: str) -> ToolResult:
    """The result of a call that did not run (refused by the agent, or out of budget)."""
    return ToolResult(executed=False, error=error, error_kind=kind)


MAX_FILES = 1024
"""Files of one result kept in the run's record (the sandbox lists at most as many)."""


def files_of(run: dict[str, Any], room: int) -> list[RunFile]:
    """The result's files; contents kept while they fit in `room` bytes (decoded), the rest
    listed as truncated."""
    entries = run.get("files")
    if not isinstance(entries, list):
        return []
    kept: list[RunFile] = []
    for entry in entries[:MAX_FILES]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        content = entry.get("content")
        size = _int(entry.get("size")) or 0
        fits = isinstance(content, str) and size <= room
        if fits:
            room -= size
        kept.append(
            RunFile(
                path=entry["path"][:4096],
                size=size,
                sha256=_short(entry.get("sha256")),
                content=content if fits else None,
                truncated=bool(entry.get("truncated")) or (isinstance(content, str) and not fits),
                skipped=_short(entry.get("skipped")),
            )
        )
    return kept


def result_of(outcome: ToolOutcome, cap_bytes: int, file_bytes: int = 0) -> ToolResult:
    """The capped result of a sandbox call (`file_bytes`: room for its files' contents)."""
    if outcome.error is not None:
        return ToolResult(
            executed=False,
            error=outcome.error,
            error_kind=outcome.error_kind,
            duration_ms=outcome.round_trip_ms,
        )
    body = outcome.body
    run: dict[str, Any] = body.get("result") or {}
    stdout_raw = str(run.get("stdout") or "")
    stderr_raw = str(run.get("stderr") or "")
    stdout, stdout_cut = cap_text(_valid(stdout_raw), cap_bytes)
    stderr, stderr_cut = cap_text(_valid(stderr_raw), cap_bytes)
    size = len(stdout_raw.encode("utf-8", "surrogatepass")) + len(
        stderr_raw.encode("utf-8", "surrogatepass")
    )
    return ToolResult(
        executed=True,
        tool_status=_short(body.get("tool_status")),
        exit_code=_int(run.get("exit_code")),
        signal=_int(run.get("signal")),
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_cut or bool(run.get("stdout_truncated")),
        stderr_truncated=stderr_cut or bool(run.get("stderr_truncated")),
        limit_hit=_short(run.get("limit_hit")),
        denials=_capped_denials(run.get("denials"), cap_bytes),
        seccomp_refusals=_int(run.get("seccomp_refusals")) or 0,
        output_bytes=size,
        duration_ms=outcome.round_trip_ms,
        files=files_of(run, file_bytes),
    )


MAX_DENIALS = 50


def _capped_denials(value: object, cap_bytes: int) -> Any:
    """What the sandbox denied, as it said it, within the cap (a count beyond it)."""
    if value is None or value == []:
        return None  # nothing refused: nothing to say
    if isinstance(value, list) and len(value) > MAX_DENIALS:
        value = value[:MAX_DENIALS]
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return "denials the sandbox reported could not be read"
    if size > cap_bytes:
        count = len(value) if isinstance(value, list | dict) else 1
        return f"{count} denials (too long to show)"
    return value


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(value: object) -> str | None:
    return value[:64] if isinstance(value, str) else None


_ALWAYS_SHOWN = {
    "tool_status",
    "exit_code",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
}
"""What the model always sees of a run (in the result's field order)."""
_SHOWN_WHEN_SET = ("signal", "limit_hit", "denials")


def observation(tool: str, call_id: str, result: ToolResult) -> str:
    """The content of the ``tool`` message answering a call."""
    shown: dict[str, Any] = {"tool": tool, "call_id": call_id}
    if not result.executed:
        shown["error"] = result.error
        shown["error_kind"] = result.error_kind
    else:
        shown.update(result.model_dump(include=_ALWAYS_SHOWN))
        for name in _SHOWN_WHEN_SET:
            if (value := getattr(result, name)) is not None:
                shown[name] = value
        if result.seccomp_refusals:
            shown["seccomp_refusals"] = result.seccomp_refusals
        if result.files:
            # Names and sizes: the contents are kept with the run, for its caller.
            shown["files"] = [
                {
                    "path": f.path,
                    "size": f.size,
                    **({"truncated": True} if f.truncated else {}),
                    **({"skipped": f.skipped} if f.skipped else {}),
                }
                for f in result.files
            ]
    return _valid(json.dumps(shown, ensure_ascii=False))


def outcome_signature(result: ToolResult) -> str:
    """What a result said, without timing: equal signatures mean the same result."""
    return result.model_dump_json(exclude={"duration_ms"})
