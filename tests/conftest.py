"""Fixtures shared by every test: keys, tokens, and real services on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pagi import SERVICES
from pagi.auth import TokenSigner, TrustStore, generate_keys
from pagi.settings import CommonSettings
from pagi.stack import Stack
from testing import REPO
from testing.stack import StackFactory, launch_stack, stack_env

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
