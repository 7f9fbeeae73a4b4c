"""The ``ModelGateway`` servicer: validation, deadline, admission, backend call, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import grpc

from gateway.admission import Admission, GatewayBusy
from gateway.backends.base import BackendError, Deadline, ErrorCode, PlanBackend
from gateway.conversation import (
    Conversation,
    DecisionResult,
    InvalidConversation,
    conversation_from_proto,
    decision_to_proto,
)
from gateway.interceptor import caller_var
from gateway.metrics import GatewayMetrics
from pagi.logging import log_event
from pagi.request_id import current_request_id
from proto import model_gateway_pb2, model_gateway_pb2_grpc

logger = logging.getLogger(__name__)


STATUS_OF: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""The trailer gRPC clients' retry policies read for when to try again (gRFC A6)."""

# The backend's own deadline ends this much before the caller's, so the
# gateway answers with its own DEADLINE_EXCEEDED (and counts it) rather than
# being cancelled by gRPC mid-call.
DEADLINE_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class ServiceLimits:
    """The checks every plan request passes."""

    max_prompt_bytes: int
    default_max_steps: int
    max_steps: int
    max_deadline_seconds: float
    max_conversation_bytes: int = 512 * 1024


@dataclass(frozen=True)
class Failure:
    """Why a call failed, as the client will see it."""

    status: grpc.StatusCode
    message: str


class ModelGatewayService(model_gateway_pb2_grpc.ModelGatewayServicer):
    """Serves plans from one backend."""

    def __init__(
        self,
        backend: PlanBackend,
        limits: ServiceLimits,
        admission: Admission,
        metrics: GatewayMetrics,
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.admission = admission
        self.metrics = metrics
        metrics.register(backend.name, backend.model)

    # ------------------------------------------------------------------ checks

    def _check(self, request: model_gateway_pb2.PlanRequest, rpc: str) -> Failure | int:
        """The step limit for a valid request, or why it is refused (logged)."""
        checked = self._validate(request)
        if isinstance(checked, Failure):
            log_event(
                logger,
                "plan_refused",
                logging.WARNING,
                rpc=rpc,
                code=checked.status.name,
                reason=checked.message,
                caller=caller_var.get(),
            )
        return checked

    def _validate(self, request: model_gateway_pb2.PlanRequest) -> Failure | int:
        if not request.prompt.strip():
            return Failure(grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty")
        size = len(request.prompt.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_prompt_bytes:
            return Failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"prompt is {size} bytes; the limit is {self.limits.max_prompt_bytes}",
            )
        if request.max_steps > self.limits.max_steps:
            return Failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_steps must be at most {self.limits.max_steps}",
            )
        return request.max_steps or self.limits.default_max_steps

    def _deadline(self, context: grpc.aio.ServicerContext) -> Deadline:
        remaining = context.time_remaining()
        budget = self.limits.max_deadline_seconds
        if remaining is not None:
            margin = min(DEADLINE_MARGIN_SECONDS, remaining * 0.1)
            budget = min(budget, max(0.0, remaining - margin))
        return Deadline.after(budget)

    def _failed(self, failure: Failure, started: float, rpc: str, counted: bool = True) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        if counted:
            self.metrics.record_error(
                self.backend.name, self.backend.model, failure.status.name, rpc
            )
        log_event(
            logger,
            "plan_failed",
            logging.WARNING,
            rpc=rpc,
            backend=self.backend.name,
            code=failure.status.name,
            reason=failure.message,
            latency_ms=round(latency_ms, 2),
            caller=caller_var.get(),
        )

    def _busy(self, exc: GatewayBusy, started: float, rpc: str) -> Failure:
        self.metrics.record_rejected(self.backend.name, self.backend.model)
        failure = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self._failed(failure, started, rpc, counted=False)
        return failure

    def _served(self, rpc: str, steps: int, started: float, prompt_bytes: int) -> float:
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.record_success(self.backend.name, self.backend.model, latency_ms, rpc)
        log_event(
            logger,
            "plan_served",
            rpc=rpc,
            backend=self.backend.name,
            model=self.backend.model,
            steps=steps,
            prompt_bytes=prompt_bytes,
            latency_ms=round(latency_ms, 2),
            caller=caller_var.get(),
        )
        return latency_ms

    @asynccontextmanager
    async def _admitted(
        self, rpc: str, started: float, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Deadline]:
        """An admission slot and the backend's deadline; any failure in the block aborts the RPC.

        The one place a backend call's failure becomes a status: busy gives
        RESOURCE_EXHAUSTED with a retry pushback, a backend error its own
        code, a bug INTERNAL (never a traceback); each is counted and logged.
        """
        deadline = self._deadline(context)
        try:
            async with self.admission.slot():
                yield deadline
            return
        except GatewayBusy as exc:
            await context.abort(
                *_parts(self._busy(exc, started, rpc)), trailing_metadata=_pushback(exc)
            )
            raise  # abort raises; this only tells type checkers
        except BackendError as exc:
            failure = Failure(STATUS_OF[exc.code], exc.message)
        except asyncio.CancelledError:
            self._failed(Failure(grpc.StatusCode.CANCELLED, "call cancelled"), started, rpc)
            raise
        except Exception:  # noqa: BLE001 - a bug must give INTERNAL, never a traceback
            failure = self._unexpected(rpc)
        self._failed(failure, started, rpc)
        await context.abort(failure.status, failure.message)
        raise AssertionError("context.abort returned")

    def _unexpected(self, rpc: str) -> Failure:
        logger.exception("unexpected failure in %s", rpc, extra={"event": "plan_crashed"})
        return Failure(grpc.StatusCode.INTERNAL, "internal error in the model gateway")

    # ------------------------------------------------------------------ RPCs

    async def GetPlan(  # noqa: N802 - the name is the RPC's
        self, request: model_gateway_pb2.PlanRequest, context: grpc.aio.ServicerContext
    ) -> model_gateway_pb2.PlanResponse:
        """A whole plan for the prompt."""
        started = time.perf_counter()
        checked = self._check(request, "GetPlan")
        if isinstance(checked, Failure):
            await context.abort(checked.status, checked.message)
        max_steps = checked
        async with self._admitted("GetPlan", started, context) as deadline:
            steps = await self.backend.plan(request.prompt, max_steps, deadline)
        steps = steps[:max_steps]
        if not steps:
            failure = Failure(grpc.StatusCode.INTERNAL, "the backend produced no steps")
            self._failed(failure, started, "GetPlan")
            await context.abort(failure.status, failure.message)
        prompt_bytes = len(request.prompt.encode("utf-8", "surrogatepass"))
        latency_ms = self._served("GetPlan", len(steps), started, prompt_bytes)
        return model_gateway_pb2.PlanResponse(
            steps=[f"{number}. {text}" for number, text in enumerate(steps, start=1)],
            model=self.backend.model,
            latency_ms=latency_ms,
            backend=self.backend.name,
            request_id=current_request_id() or "",
        )

    async def StreamPlan(  # noqa: N802 - the name is the RPC's
        self, request: model_gateway_pb2.PlanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[model_gateway_pb2.PlanChunk]:
        """The plan, one step per message, then a final ``done`` message."""
        started = time.perf_counter()
        checked = self._check(request, "StreamPlan")
        if isinstance(checked, Failure):
            await context.abort(checked.status, checked.message)
        max_steps = checked
        request_id = current_request_id() or ""
        common = {"model": self.backend.model, "backend": self.backend.name}
        count = 0
        async with self._admitted("StreamPlan", started, context) as deadline:
            stream = self.backend.stream(request.prompt, max_steps, deadline)
            async with aclosing(stream) as steps:
                async for text in steps:
                    count += 1
                    yield model_gateway_pb2.PlanChunk(
                        index=count - 1,
                        step=f"{count}. {text}",
                        done=False,
                        request_id=request_id,
                        **common,
                    )
                    if count >= max_steps:
                        break
        if count == 0:
            failure = Failure(grpc.StatusCode.INTERNAL, "the backend produced no steps")
            self._failed(failure, started, "StreamPlan")
            await context.abort(failure.status, failure.message)
        prompt_bytes = len(request.prompt.encode("utf-8", "surrogatepass"))
        latency_ms = self._served("StreamPlan", count, started, prompt_bytes)
        yield model_gateway_pb2.PlanChunk(
            index=count, done=True, latency_ms=latency_ms, request_id=request_id, **common
        )

    def _conversation(self, request: model_gateway_pb2.DecideRequest) -> Conversation | Failure:
        size = request.ByteSize()
        if size > self.limits.max_conversation_bytes:
            failure = Failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the conversation is {size} bytes; the limit is "
                f"{self.limits.max_conversation_bytes}",
            )
        else:
            try:
                return conversation_from_proto(request)
            except InvalidConversation as exc:
                failure = Failure(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log_event(
            logger,
            "decision_refused",
            logging.WARNING,
            code=failure.status.name,
            reason=failure.message,
            caller=caller_var.get(),
        )
        return failure

    async def Decide(  # noqa: N802 - the name is the RPC's
        self, request: model_gateway_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> model_gateway_pb2.DecideResponse:
        """An agent's next action: tool calls or a final answer, and the tokens used."""
        started = time.perf_counter()
        conversation = self._conversation(request)
        if isinstance(conversation, Failure):
            await context.abort(conversation.status, conversation.message)
        async with self._admitted("Decide", started, context) as deadline:
            decision = await self.backend.decide(conversation, deadline)
        latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.record_success(
            self.backend.name,
            self.backend.model,
            latency_ms,
            "Decide",
            prompt_tokens=decision.usage.prompt_tokens,
            completion_tokens=decision.usage.completion_tokens,
        )
        log_event(
            logger,
            "decision_served",
            backend=self.backend.name,
            model=self.backend.model,
            tool_calls=len(decision.tool_calls),
            finish_reason=decision.finish_reason,
            prompt_tokens=decision.usage.prompt_tokens,
            completion_tokens=decision.usage.completion_tokens,
            conversation_bytes=request.ByteSize(),
            latency_ms=round(latency_ms, 2),
            caller=caller_var.get(),
        )
        result = DecisionResult(decision, self.backend.model, self.backend.name, latency_ms)
        return decision_to_proto(result, current_request_id() or "")

    async def GetMetrics(  # noqa: N802 - the name is the RPC's
        self, request: model_gateway_pb2.MetricsRequest, context: grpc.aio.ServicerContext
    ) -> model_gateway_pb2.MetricsResponse:
        """Per-backend counters and latency."""
        backends = []
        for stats in self.metrics.backends.values():
            latency = stats.latency()
            backends.append(
                model_gateway_pb2.BackendMetrics(
                    backend=stats.backend,
                    model=stats.model,
                    calls=stats.calls,
                    errors=stats.errors,
                    errors_by_code=dict(stats.errors_by_code),
                    rejected=stats.rejected,
                    in_flight=self.admission.in_flight if stats.backend == self.backend.name else 0,
                    backend_counters=(
                        self.backend.counters() if stats.backend == self.backend.name else {}
                    ),
                    latency=model_gateway_pb2.LatencySummary(
                        count=latency.count,
                        mean_ms=latency.mean_ms,
                        p50_ms=latency.p50_ms,
                        p95_ms=latency.p95_ms,
                        max_ms=latency.max_ms,
                    ),
                )
            )
        return model_gateway_pb2.MetricsResponse(
            backends=backends,
            max_concurrent_calls=self.admission.limit,
            uptime_seconds=self.metrics.uptime_seconds,
        )


def _parts(failure: Failure) -> tuple[grpc.StatusCode, str]:
    return failure.status, failure.message


def _pushback(busy: GatewayBusy) -> tuple[tuple[str, str], ...]:
    return ((RETRY_PUSHBACK_KEY, str(round(busy.retry_after_seconds * 1000))),)
