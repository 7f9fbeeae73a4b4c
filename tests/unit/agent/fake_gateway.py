"""A stand-in for the gateway client: answers, fails or stalls as the test says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.backends.local import plan_steps
from gateway.backends.local_decide import decide_locally
from gateway.client import GatewayError, PlanChunk, PlanResult
from gateway.conversation import Conversation, DecisionResult

DEFAULT_STEPS = ["1. Read the request", "2. Run the demo tool", "3. Summarise the result"]


class FakeGateway:
    """Implements the agent's ``ModelGateway`` (decisions come from the local backend)."""

    def __init__(self) -> None:
        self.steps = list(DEFAULT_STEPS)
        self.error: GatewayError | None = None
        self.fail_after_steps: int | None = None
        self.delay = 0.0
        self.prompts: list[str] = []
        self.closed = False

    async def get_plan(self, prompt: str) -> PlanResult:
        self.prompts.append(prompt)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return PlanResult(steps=self.steps, model="fake-planner", latency_ms=1.5, backend="fake")

    async def stream_plan(self, prompt: str) -> AsyncIterator[PlanChunk]:
        self.prompts.append(prompt)
        for index, step in enumerate(self.steps):
            if self.fail_after_steps == index and self.error is not None:
                raise self.error
            await asyncio.sleep(self.delay)
            yield PlanChunk(index=index, step=step, done=False)
        if self.fail_after_steps is None and self.error is not None:
            raise self.error
        yield PlanChunk(index=len(self.steps), step="", done=True)

    async def decide(
        self, conversation: Conversation, timeout_seconds: float | None = None
    ) -> DecisionResult:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        decision = decide_locally(conversation, plan_steps)
        return DecisionResult(decision, model="fake-local", backend="fake", latency_ms=0.1)

    async def close(self) -> None:
        self.closed = True
