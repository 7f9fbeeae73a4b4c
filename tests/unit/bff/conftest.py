"""Fixtures of the bff's tests: a fake downstream service on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.fake_downstream import FakeDownstream, serve


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeDownstream, str]]:
    """One fake standing in for the agent, the sandbox and memory, and its base URL."""
    fake = FakeDownstream()
    with serve(fake) as url:
        yield fake, url
