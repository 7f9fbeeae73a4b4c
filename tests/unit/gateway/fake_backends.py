"""Backends for server tests: one that blocks until released, one with a bug."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.backends.base import Deadline, PlanBackend


class BlockingBackend(PlanBackend):
    """Waits until released; records the deadline it was given."""

    name = "blocking"
    model = "blocking-1"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.deadlines: list[float] = []

    async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
        self.deadlines.append(deadline.remaining())
        self.entered.set()
        await self.release.wait()
        return ["Wait", "Proceed"]

    async def stream(self, prompt: str, max_steps: int, deadline: Deadline) -> AsyncIterator[str]:
        for step in await self.plan(prompt, max_steps, deadline):
            yield step


class BrokenBackend(PlanBackend):
    """Fails with a bug, not a BackendError."""

    name = "broken"
    model = "broken-1"

    async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
        raise ZeroDivisionError("secret internal state")

    async def stream(self, prompt: str, max_steps: int, deadline: Deadline) -> AsyncIterator[str]:
        yield "first"
        raise KeyError("secret internal state")
