"""One real stack on loopback, shared by every fuzz test of the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pagi.stack import Stack
from testing.live import start_live_stack

# Short downstream deadlines: a fuzzed request that makes a service wait on
# another must still be answered quickly.
FUZZ_ENV = {"REQUEST_TIMEOUT_SECONDS": "2", "MODEL_GATEWAY_GRPC_TIMEOUT_SECONDS": "3"}


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    """Every PAGI service running as a process on free loopback ports."""
    stack = start_live_stack(tmp_path_factory.mktemp("fuzz-state"), keys_dir, **FUZZ_ENV)
    yield stack
    stack.stop()
