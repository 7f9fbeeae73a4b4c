"""Fixtures of the sandbox's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandbox.host.runner import Runner
from tests.unit.sandbox.jailed import PYTHON


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runner]:
    """A started Runner with every layer this host offers, shared by a module's tests."""
    state = tmp_path_factory.mktemp("sandbox-state")
    jail_runner = Runner(python_executable=PYTHON, state_dir=state, warm_modules=("json", "re"))
    await jail_runner.start()
    yield jail_runner
    await jail_runner.close()
