"""Fixtures of the gateway tests: a fake model server, captured logs, a gateway in-process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pagi.logging import JsonFormatter
from testing.fake_openai import FakeOpenAI
from testing.gateway import RunningGateway, serve_gateway


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """An OpenAI-compatible server on a free loopback port."""
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


class JsonLogLines(logging.Handler):
    """Every log record, formatted as the services print it, at the time it is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def json_logs() -> Iterator[JsonLogLines]:
    """Captures every log line (all loggers, DEBUG and up) during the test."""
    handler = JsonLogLines()
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


@pytest.fixture
async def gateway(keys_dir: Path) -> AsyncIterator[RunningGateway]:
    """A gateway with the local planner."""
    async with serve_gateway(keys_dir) as running:
        yield running
