"""The one interface every model backend implements, and its error type."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from gateway.conversation import Conversation, Decision


class ErrorCode(StrEnum):
    """Failure kinds a backend reports; the server maps them to gRPC status codes."""

    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    PERMISSION_DENIED = "permission_denied"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    INVALID_ARGUMENT = "invalid_argument"
    INTERNAL = "internal"


class BackendError(Exception):
    """A backend could not produce a plan; ``message`` is safe to show a client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Deadline:
    """A point in time (``time.monotonic()``) by which a call must be answered."""

    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0


class PlanBackend(ABC):
    """A model: plan steps for a prompt (plain text, unnumbered), an agent's next action."""

    name: str
    model: str

    @abstractmethod
    async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
        """The whole plan, at most ``max_steps`` steps; :class:`BackendError` on failure."""

    @abstractmethod
    def stream(self, prompt: str, max_steps: int, deadline: Deadline) -> AsyncIterator[str]:
        """The plan's steps as they are produced; :class:`BackendError` on failure."""

    async def decide(self, conversation: Conversation, deadline: Deadline) -> Decision:
        """The model's next action in ``conversation``; :class:`BackendError` on failure."""
        raise BackendError(
            ErrorCode.FAILED_PRECONDITION, f"the {self.name} backend cannot decide tool calls"
        )

    def describe(self) -> dict[str, object]:
        """What the backend is, for logs (never secrets)."""
        return {"backend": self.name, "model": self.model}

    def counters(self) -> dict[str, int]:
        """The backend's own counters (e.g. upstream attempts), for metrics."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections and other resources."""
