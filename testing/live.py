"""Real services on loopback for the adversarial suites (fuzz, load, faults).

A stack here lives as long as a module or the session, unlike the
function-scoped ``start_stack`` fixture: hypothesis tests need the service
to outlive every example, and starting the stack per test would cost more
than the fuzzing itself. Process inspection reads ``/proc`` directly so the
figures (RSS, fds, zombies) need no extra dependency.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from pagi import SERVICES
from pagi.stack import Stack
from testing.stack import launch_stack, stack_env

HTTP_SERVICES = ("agent", "sandbox", "bff", "memory")
"""The services that answer HTTP (the gateway speaks gRPC)."""

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


@dataclass(frozen=True)
class RawAnswer:
    """What a server sent back on one connection, and how the exchange ended."""

    data: bytes
    closed: bool
    """The server closed or reset the connection."""
    elapsed: float
    """Seconds from sending to the whole answer, the close, or giving up."""

    @property
    def complete(self) -> bool:
        """A whole HTTP response came back."""
        return http_response_complete(self.data)

    @property
    def status_line(self) -> bytes:
        """The answer's first line (empty when nothing came)."""
        return self.data.split(b"\r\n", 1)[0]


def raw_exchange(host: str, port: int, payload: bytes, timeout: float) -> RawAnswer:
    """Send bytes on a fresh connection and read one response, waiting at most ``timeout``.

    The socket is not half-closed: the server would take the end of input for
    a client gone away and drop the request. Reading stops at a whole
    response, at the server's close, or at ``timeout``.
    """
    started = time.monotonic()
    data = b""
    closed = False
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server may answer and close before it has read everything
        deadline = started + timeout
        while not http_response_complete(data) and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    return RawAnswer(data, closed, time.monotonic() - started)


def raw_answer_problem(answer: RawAnswer, within: float) -> str | None:
    """Why ``answer`` breaks the rule for raw bytes, or None.

    The rule: a whole HTTP response, not a 5xx, within ``within`` seconds.
    Silence until the reader gave up is a stuck socket; a close without a
    response leaves the client without a reason; both are failures.
    """
    if not answer.complete:
        if answer.closed:
            return f"closed after {answer.elapsed:.2f}s, no whole answer: {answer.data[:200]!r}"
        return f"no whole answer after {answer.elapsed:.2f}s (stuck): {answer.data[:200]!r}"
    if answer.elapsed > within:
        return f"answered after {answer.elapsed:.2f}s, more than {within}s: {answer.status_line!r}"
    if answer.status_line.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")):
        return f"server error: {answer.data[:500]!r}"
    return None


@dataclass(frozen=True)
class GrpcAnswer:
    """How one gRPC call ended."""

    code: grpc.StatusCode
    details: str
    elapsed: float
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()


def grpc_answer(call: Callable[[], object]) -> GrpcAnswer:
    """Make ``call`` (reading a stream to its end) and say how it ended, and when."""
    started = time.monotonic()
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            for _ in result:  # type: ignore[attr-defined]
                pass
    except grpc.RpcError as exc:
        return GrpcAnswer(
            exc.code(),  # type: ignore[attr-defined]
            exc.details() or "",  # type: ignore[attr-defined]
            time.monotonic() - started,
            tuple(exc.trailing_metadata() or ()),  # type: ignore[attr-defined]
        )
    return GrpcAnswer(grpc.StatusCode.OK, "", time.monotonic() - started)


def grpc_answer_problem(
    answer: GrpcAnswer, allowed: Collection[grpc.StatusCode], within: float
) -> str | None:
    """Why ``answer`` is not a deliberate, timely status from ``allowed``, or None.

    A hang shows as DEADLINE_EXCEEDED at the client's timeout, a crashed or
    wedged server as UNAVAILABLE: neither is an answer, and ``within`` is
    meant to be well inside the call's timeout so that a slow answer fails
    too, not only a missing one.
    """
    shown = f"{answer.code.name} after {answer.elapsed:.2f}s: {answer.details[:300]!r}"
    if answer.elapsed > within:
        return f"no answer within {within}s: {shown}"
    if answer.code not in allowed:
        return f"{shown} (expected one of {sorted(code.name for code in allowed)})"
    return None


def assert_grpc_answer(
    call: Callable[[], object], allowed: Collection[grpc.StatusCode], within: float
) -> grpc.StatusCode:
    """Make ``call``; fail unless it ends in time with a status from ``allowed``."""
    answer = grpc_answer(call)
    problem = grpc_answer_problem(answer, allowed, within)
    assert problem is None, problem
    return answer.code


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
