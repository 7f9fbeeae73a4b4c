"""Real services on loopback for the adversarial suites (fuzz, load, faults).

A stack here lives as long as a module or the session, unlike the
function-scoped ``start_stack`` fixture: hypothesis tests need the service
to outlive every example, and starting the stack per test would cost more
than the fuzzing itself. Process inspection reads ``/proc`` directly so the
figures (RSS, fds, zombies) need no extra dependency.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from pagi import SERVICES
from pagi.stack import Stack
from tests.conftest import launch_stack, stack_env

JSON_TYPES = ("application/json", "application/problem+json")


def start_live_stack(
    state_dir: Path,
    keys_dir: Path,
    services: Iterable[str] | None = None,
    timeout: float = 60.0,
    **overrides: str,
) -> Stack:
    """Start ``services`` (default: all) on free loopback ports; the caller stops the stack."""
    env = stack_env(state_dir, keys_dir, **overrides)
    return launch_stack(env, services if services is not None else SERVICES, timeout)


def service_pid(stack: Stack, name: str) -> int:
    """The pid of a running service's main process."""
    return stack.processes[name].process.pid


def recent_logs(stack: Stack, name: str, lines: int = 40) -> str:
    """The last lines a service printed, for assertion messages."""
    return "\n".join(stack.logs.of(name)[-lines:])  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- answers


def json_error_problem(response: httpx.Response) -> str | None:
    """Why ``response`` is not an acceptable answer to hostile input, or None.

    Acceptable: a 2xx, or a 4xx whose body is a JSON object with an
    ``error`` field (PAGI's one error shape). Never a 5xx.
    """
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.text[:500]!r}"
    if status < 400:
        return None
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith(JSON_TYPES):
        return f"{status} with content-type {content_type!r}: {response.text[:200]!r}"
    try:
        body = response.json()
    except ValueError:
        return f"{status} with a body that is not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or "error" not in body:
        return f"{status} JSON error without an 'error' field: {body!r:.300}"
    if "Traceback" in response.text:
        return f"{status} leaks a traceback: {response.text[:500]!r}"
    return None


def http_response_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP/1.1 response (headers and Content-Length body)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def assert_serving(base_url: str, timeout: float = 5.0) -> None:
    """The service still answers ``/health`` with ``status: ok``."""
    response = httpx.get(f"{base_url}/health", timeout=timeout, trust_env=False)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok", response.text


# --------------------------------------------------------------------------- /proc


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def process_stat(pid: int) -> dict[str, Any] | None:
    """``{"state", "ppid"}`` of a process from ``/proc/PID/stat``, or None when gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name is in parentheses and may itself contain spaces.
    rest = text[text.rfind(")") + 2 :].split()
    return {"state": rest[0], "ppid": int(rest[1])}


def all_pids() -> list[int]:
    """Every pid visible in ``/proc``."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for candidate in all_pids():
        stat = process_stat(candidate)
        if stat is not None:
            parents.setdefault(stat["ppid"], []).append(candidate)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child in parents.get(current, []):
            found.append(child)
            frontier.append(child)
    return found


def zombies_under(pid: int) -> list[int]:
    """Descendants of ``pid`` that have exited but were never reaped."""
    return [child for child in descendants(pid) if (process_stat(child) or {}).get("state") == "Z"]


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    text = _read(f"/proc/{pid}/status") or ""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of a process and all its descendants."""
    return rss_bytes(pid) + sum(rss_bytes(child) for child in descendants(pid))


def fd_count(pid: int) -> int:
    """Open file descriptors of one process."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
