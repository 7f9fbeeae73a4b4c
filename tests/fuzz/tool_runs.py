"""How the tool-code fuzz judges one run, and what a run may leave behind.

Two things make a fuzzed run count. It must have happened: the sandbox
answered 200 and the program's first statement wrote a nonce to stdout
(for generated programs), or the interpreter's verdict on arbitrary text
agrees with this host's own compile() (for random text). And it must end
in time and leave nothing: no process carrying the module's marker, no
zombie, no working dir, no file descriptor beyond those of jails the
sandbox builds ahead by design.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from testing.live import all_pids, wait_until
from testing.load_driver import ProcessSnapshot
from testing.load_driver import leftovers as service_leftovers

TOOL_STATUSES = {"ok", "error", "timeout", "limit", "killed"}
RESULT_FIELDS = {"stdout", "stderr", "exit_code", "duration_ms", "stdout_truncated"}


@dataclass(frozen=True)
class RunProof:
    """What shows that a run executed the code it was given."""

    ran_line: str | None = None
    """Generated programs: the first line their prelude writes to stdout."""
    syntax_error: bool | None = None
    """Arbitrary text: whether this host's compile() refuses it."""


def with_prelude(program: str) -> tuple[str, RunProof]:
    """``program`` behind a first statement that proves it started, and that proof.

    ``os.write`` goes straight to fd 1, so the line is out before the program
    can buffer, close stdout or be killed.
    """
    line = f"pagi-fuzz-ran-{uuid.uuid4().hex[:12]}"
    return f"import os; os.write(1, b'{line}\\n')\n{program}", RunProof(ran_line=line)


SYNTAX_ERRORS = ("SyntaxError:", "IndentationError:", "TabError:")


def compile_verdict(text: str) -> RunProof:
    """Whether this host's Python refuses ``text`` as a program (the jail runs the same one).

    Compiled from its UTF-8 bytes, as the interpreter reads main.py: a BOM or
    a coding declaration then counts as it does there.
    """
    try:
        compile(text.encode("utf-8"), "main.py", "exec")
    except (SyntaxError, ValueError):
        return RunProof(syntax_error=True)
    return RunProof(syntax_error=False)


def run_problem(response: httpx.Response, proof: RunProof, elapsed: float, within: float) -> str:
    """Why this answer does not show a whole, timely run of the code; empty when it does."""
    if elapsed > within:
        return f"answered after {elapsed:.2f}s, more than {within}s"
    if response.status_code != 200:
        # Every program here fits the policy: a refusal means it never ran.
        return f"the program never ran: {response.status_code} {response.text[:300]}"
    body = response.json()
    if body.get("tool_status") not in TOOL_STATUSES:
        return f"unknown tool_status: {body}"
    result = body.get("result") or {}
    if not RESULT_FIELDS <= set(result):
        return f"result lacks {sorted(RESULT_FIELDS - set(result))}: {body}"
    if not isinstance(result["stdout"], str) or not isinstance(result["stderr"], str):
        return f"stdout/stderr are not text: {body}"
    if result["duration_ms"] > within * 1000:
        return f"the run took {result['duration_ms']} ms: {body}"
    if body["tool_status"] == "timeout" and result.get("limit_hit") != "wall_time":
        return f"a timeout without the wall-time limit hit: {body}"
    if proof.ran_line is not None and not result["stdout"].startswith(proof.ran_line + "\n"):
        return f"the program's first line never showed on stdout: {str(body)[:500]}"
    # IndentationError and TabError are SyntaxErrors, reported by their own names.
    if proof.syntax_error and not any(name in result["stderr"] for name in SYNTAX_ERRORS):
        return f"text this host refuses to compile got no SyntaxError: {str(body)[:500]}"
    if proof.syntax_error is False and body["tool_status"] == "error":
        if "Traceback" not in result["stderr"]:
            return f"valid Python failed without a traceback: {str(body)[:500]}"
    return ""


def check_run(client: httpx.Client, code: str, proof: RunProof, tool: str, within: float) -> dict:
    """Run ``code`` with ``tool``; assert the run happened, in time, and answered whole."""
    started = time.monotonic()
    response = client.post("/api/v1/execute_tool", json={"tool_name": tool, "code": code})
    problem = run_problem(response, proof, time.monotonic() - started, within)
    assert not problem, f"{problem}\ncode: {code[:300]!r}"
    return response.json()


# --------------------------------------------------------------------------- leftovers


def marked_processes(marker: str) -> list[str]:
    """Processes anywhere on this host whose command line carries ``marker``."""
    found = []
    for pid in all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            shown = cmdline.replace(b"\0", b" ")[:120]
            found.append(f"{pid}: {shown!r}")
    return found


def survivors(marker: str, grace: float) -> list[str]:
    """Marked processes still alive ``grace`` seconds from now (the run's end kills them)."""
    wait_until(lambda: not marked_processes(marker), timeout=grace)
    return marked_processes(marker)


def leftovers(
    rest: ProcessSnapshot, after: ProcessSnapshot, kept_fds: int, stray: list[str]
) -> list[str]:
    """What the service holds after the fuzzing that it did not hold at rest, and survivors."""
    problems = service_leftovers(rest, after, kept_fds)
    if stray:
        problems.append("processes outlived their run:\n" + "\n".join(stray))
    return problems
