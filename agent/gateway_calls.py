"""Asking the model gateway, with its failures turned into clear HTTP errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.client import GatewayError, PlanChunk, PlanResult
from gateway.conversation import Conversation, DecisionResult
from pagi.errors import ApiError
from pagi.logging import log_event
from pagi.sse import sse_event

logger = logging.getLogger(__name__)

# The gateway client enforces the gRPC deadline itself; this margin only
# guards against a client that would never return.
DEADLINE_MARGIN_SECONDS = 1.0


class PlanSource(Protocol):
    """What the agent needs from the gateway client (a fake in tests)."""

    async def get_plan(self, prompt: str) -> PlanResult:
        """A whole plan."""
        ...

    def stream_plan(self, prompt: str) -> AsyncIterator[PlanChunk]:
        """The plan step by step."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


class ModelGateway(PlanSource, Protocol):
    """All the agent needs from the gateway: plans, and next actions for runs."""

    async def decide(
        self, conversation: Conversation, timeout_seconds: float | None = None
    ) -> DecisionResult:
        """The next action in ``conversation``."""
        ...


def gateway_failure(exc: GatewayError) -> ApiError:
    """The HTTP error a client gets for a failed gateway call (502, 503, 504, 400)."""
    headers = {"Retry-After": "1"} if exc.http_status == 503 else None
    return ApiError(
        exc.http_status,
        f"gateway_{exc.code}",
        f"model gateway: {exc.message}",
        headers=headers,
        gateway_code=exc.code,
    )


def unexpected_failure(exc: Exception) -> GatewayError:
    """A gateway client failure that is not a :class:`GatewayError` (a bug, not the network)."""
    log_event(logger, "gateway_client_error", logging.ERROR, error=repr(exc))
    return GatewayError("internal", f"the gateway call failed ({type(exc).__name__})")


def deadline_failure(timeout_seconds: float) -> ApiError:
    """The error for a gateway call that outlived its deadline."""
    return ApiError(
        504,
        "gateway_deadline_exceeded",
        f"model gateway did not answer within {timeout_seconds:g}s",
        gateway_code="deadline_exceeded",
    )


async def ask_for_plan(
    source: PlanSource, prompt: str, timeout_seconds: float, limit_seconds: float | None = None
) -> tuple[PlanResult, float]:
    """The gateway's plan and the round trip in ms, or an :class:`ApiError`.

    ``limit_seconds`` (the caller's budget) cuts the call short when it is
    tighter than the gateway deadline.
    """
    started = time.perf_counter()
    cutoff = timeout_seconds + DEADLINE_MARGIN_SECONDS
    if limit_seconds is not None and limit_seconds < cutoff:
        cutoff = timeout_seconds = max(limit_seconds, 0.0)
    try:
        async with asyncio.timeout(cutoff):
            result = await source.get_plan(prompt)
    except GatewayError as exc:
        log_event(logger, "gateway_failed", logging.WARNING, code=exc.code, message=exc.message)
        raise gateway_failure(exc) from None
    except TimeoutError:
        log_event(logger, "gateway_failed", logging.WARNING, code="deadline_exceeded")
        raise deadline_failure(timeout_seconds) from None
    except Exception as exc:  # noqa: BLE001 - a failed upstream call is a 502, never a 500
        raise gateway_failure(unexpected_failure(exc)) from None
    return result, round((time.perf_counter() - started) * 1000, 2)


async def stream_plan_events(
    source: PlanSource, prompt: str, timeout_seconds: float, request_id: str | None
) -> AsyncIterator[bytes]:
    """SSE bytes: one ``step`` event per step, then ``done``, or ``error`` on failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds + DEADLINE_MARGIN_SECONDS
    stream = source.stream_plan(prompt)
    steps = 0
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(stream), max(deadline - loop.time(), 0.0))
            except StopAsyncIteration:
                break
            if chunk.done:
                break
            yield sse_event("step", {"index": chunk.index, "step": chunk.step})
            steps += 1
    except GatewayError as exc:
        log_event(logger, "gateway_failed", logging.WARNING, code=exc.code, message=exc.message)
        failure = gateway_failure(exc)
        yield sse_event("error", _error_data(failure, request_id))
        return
    except TimeoutError:
        log_event(logger, "gateway_failed", logging.WARNING, code="deadline_exceeded")
        yield sse_event("error", _error_data(deadline_failure(timeout_seconds), request_id))
        return
    except Exception as exc:  # noqa: BLE001 - end the stream with an event, not a cut connection
        failure = gateway_failure(unexpected_failure(exc))
        yield sse_event("error", _error_data(failure, request_id))
        return
    finally:
        await _close_quietly(stream)
    yield sse_event("done", {"steps": steps, "request_id": request_id})


def _error_data(failure: ApiError, request_id: str | None) -> dict[str, object]:
    return {
        "error": failure.error,
        "detail": failure.detail,
        "status_code": failure.status_code,
        "request_id": request_id,
        **failure.extra,
    }


async def _close_quietly(stream: AsyncIterator[PlanChunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except (GatewayError, RuntimeError):
        pass
