"""Fixtures shared by every test: keys, tokens, and real services on loopback."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from pagi import SERVICES
from pagi.auth import TokenSigner, TrustStore, generate_keys
from pagi.settings import CommonSettings
from pagi.stack import Stack

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

SLOW_FOLDERS = frozenset({"escape", "load", "faults"})
"""Folders whose every test is ``slow``: attacks, load and faults against real services.

The fuzz modules that attack a live stack mark themselves; the in-process
fuzzers stay in the fast tier.
"""
COMPOSE_FOLDERS = frozenset({"compose"})
BROWSER_FOLDERS = frozenset({"browser"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tiers by folder, before ``-m`` selects on the marks."""
    for item in items:
        try:
            folder = item.path.relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if folder in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
        if folder in COMPOSE_FOLDERS:
            item.add_marker(pytest.mark.compose)
        if folder in BROWSER_FOLDERS:
            item.add_marker(pytest.mark.browser)


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


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keys dir holding a key pair for every identity."""
    path = tmp_path_factory.mktemp("keys")
    generate_keys(path)
    return path


@pytest.fixture(scope="session")
def trust(keys_dir: Path) -> TrustStore:
    """The trust store built from :func:`keys_dir`."""
    return TrustStore.from_keys_dir(keys_dir)


@pytest.fixture(scope="session")
def token_for(keys_dir: Path) -> Callable[..., str]:
    """``token_for(aud, sub="operator", ttl=300)``: a valid token."""
    signers: dict[str, TokenSigner] = {}

    def make(aud: str, sub: str = "operator", ttl: int = 300) -> str:
        if sub not in signers:
            signers[sub] = TokenSigner.from_keys_dir(keys_dir, sub)
        return signers[sub].sign(aud, ttl=ttl)

    return make


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


@pytest.fixture
def start_stack(tmp_path: Path, keys_dir: Path) -> Iterator[StackFactory]:
    """``start_stack(services=[...], **env)``: real services on free loopback ports.

    Every stack started through it is stopped at the end of the test. The
    stack's ``settings`` tell where each service listens; ``stack.logs``
    collects their output.
    """
    stacks: list[Stack] = []

    def start(services: tuple[str, ...] | list[str] = SERVICES, **overrides: str) -> Stack:
        env = stack_env(tmp_path / f"state{len(stacks)}", keys_dir, **overrides)
        stack = launch_stack(env, services)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def settings_of(stack: Stack) -> CommonSettings:
    """Where the services of ``stack`` listen."""
    return stack.settings
