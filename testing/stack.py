"""Real services on loopback for tests and benchmarks: free ports, their environment, start-up."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from pagi import SERVICES
from pagi.stack import Stack
from testing import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Sockets bound for the whole test run and never listening: see closed_port().
_HELD_CLOSED: list[socket.socket] = []


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that refuses connections for the whole test run.

    The port stays bound (never listening) until the tests end, so no other
    process on the machine can take it and answer in its place.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD_CLOSED.append(sock)
    return sock.getsockname()[1]


def in_private_mount_namespace(script: str, *arguments: str) -> list[str]:
    """argv running the shell `script` (with `arguments` as $1...) in a mount namespace of its own.

    Mounts made there (root only) stay private to it; the script usually
    ends in ``exec "$@"`` to become the command that follows.
    """
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        *arguments,
    ]


def stack_env(state_dir: Path, keys_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a stack on free loopback ports with its own state dir."""
    ports = {name: free_port() for name in SERVICES}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "LOG_LEVEL": "info",
        "PAGI_STATE_DIR": str(state_dir),
        "PAGI_KEYS_DIR": str(keys_dir),
        "PY_AGENT_PORT": str(ports["agent"]),
        "RUST_SANDBOX_PORT": str(ports["sandbox"]),
        "GO_BFF_PORT": str(ports["bff"]),
        "MEMORY_MOCK_PORT": str(ports["memory"]),
        "MODEL_GATEWAY_GRPC_PORT": str(ports["gateway"]),
        "PY_AGENT_URL": f"http://127.0.0.1:{ports['agent']}",
        "RUST_SANDBOX_URL": f"http://127.0.0.1:{ports['sandbox']}",
        "GO_BFF_URL": f"http://127.0.0.1:{ports['bff']}",
        "MEMORY_URL": f"http://127.0.0.1:{ports['memory']}",
        "MODEL_GATEWAY_GRPC_HOST": "127.0.0.1",
        "PAGI_GATEWAY_METRICS_PORT": str(free_port()),
    }
    env.update(overrides)
    return env


class LogCollector:
    """Keeps every line the services print, for assertions and failure reports."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, service: str, line: str) -> None:
        self.lines.append((service, line))

    def of(self, service: str) -> list[str]:
        return [line for name, line in self.lines if name == service]


def launch_stack(
    env: dict[str, str], services: Iterable[str] = SERVICES, timeout: float = 60.0
) -> Stack:
    """Start ``services`` with ``env`` and wait until each is healthy.

    ``stack.logs`` (a :class:`LogCollector`) keeps their output; when start-up
    fails, the last lines are printed and whatever started is stopped.
    """
    logs = LogCollector()
    stack = Stack(env=env, services=list(services), cwd=REPO, sink=logs)
    stack.logs = logs  # type: ignore[attr-defined]
    try:
        stack.start(timeout=timeout)
    except Exception:
        sys.stderr.write("\n".join(f"{name}| {line}" for name, line in logs.lines[-200:]))
        stack.stop()
        raise
    return stack


StackFactory = Callable[..., Stack]
