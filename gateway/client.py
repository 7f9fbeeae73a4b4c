"""The client services use to ask the model gateway for plans and agents' next actions.

One :class:`GatewayClient` per process (create it in the app lifespan, close
it on shutdown). Every call carries a token for the ``gateway`` audience
(the same one until it nears expiry, see :class:`~pagi.auth.ReusedToken`)
and the current request id, has a deadline of ``timeout_seconds``, and
fails with :class:`GatewayError` whose ``code`` a caller can act on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from gateway.conversation import (
    Conversation,
    DecisionResult,
    conversation_to_proto,
    decision_from_proto,
)
from pagi.auth import ReusedToken, TokenSigner
from pagi.request_id import current_request_id
from proto import model_gateway_pb2, model_gateway_pb2_grpc

AUDIENCE = "gateway"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_CODES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.CANCELLED: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
}

# The HTTP status an HTTP service should answer with when a gateway call
# fails: the gateway is an upstream, so its failures are 502/503/504.
_HTTP_STATUS: dict[str, int] = {
    "unavailable": 502,
    "deadline_exceeded": 504,
    "unauthenticated": 502,
    "permission_denied": 502,
    "failed_precondition": 502,
    "resource_exhausted": 503,
    "internal": 502,
    "invalid_argument": 400,
}


@dataclass(frozen=True)
class PlanResult:
    """A whole plan."""

    steps: list[str]
    model: str
    latency_ms: float
    backend: str


@dataclass(frozen=True)
class PlanChunk:
    """One streamed step; the last chunk has ``done=True`` and an empty step."""

    index: int
    step: str
    done: bool


class GatewayError(Exception):
    """A gateway call failed.

    ``code`` is one of ``unavailable``, ``deadline_exceeded``,
    ``unauthenticated``, ``permission_denied``, ``failed_precondition``,
    ``resource_exhausted``, ``internal``, ``invalid_argument``; ``message``
    says why, in words safe to show a client.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The status an HTTP service should answer with for this failure."""
        return _HTTP_STATUS.get(self.code, 502)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> GatewayError:
        """Translate a gRPC failure into a :class:`GatewayError`."""
        status = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        code = _CODES.get(status, "internal") if status is not None else "internal"
        if status == grpc.StatusCode.UNAVAILABLE and not details:
            details = "model gateway unreachable"
        message = details or (status.name.lower() if status is not None else "gateway call failed")
        if status == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
            message = "model gateway did not answer within the deadline"
        return cls(code, message)


class GatewayClient:
    """Asynchronous client of the ``ModelGateway`` gRPC service."""

    def __init__(self, target: str, signer: TokenSigner, timeout_seconds: float) -> None:
        self.target = target
        self.timeout_seconds = timeout_seconds
        self._token = ReusedToken(signer, AUDIENCE)
        # The channel is created on first use so that it binds to the event
        # loop that serves requests, not to whatever loop built the client.
        self._channel: grpc.aio.Channel | None = None
        self._stub: model_gateway_pb2_grpc.ModelGatewayStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_stub(self) -> model_gateway_pb2_grpc.ModelGatewayStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            # A grpc.aio channel only works in the loop it was made in; a client
            # used from a new loop (a restarted app, a test) gets a new channel.
            self._loop = loop
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_retries", 0),
                ],
            )
            self._stub = model_gateway_pb2_grpc.ModelGatewayStub(self._channel)
        return self._stub

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = [("authorization", f"Bearer {self._token.get()}")]
        request_id = current_request_id()
        if request_id:
            metadata.append(("x-request-id", request_id))
        return tuple(metadata)

    async def get_plan(self, prompt: str, max_steps: int = 0) -> PlanResult:
        """Ask for a whole plan; raise :class:`GatewayError` on failure."""
        stub = self._get_stub()
        request = model_gateway_pb2.PlanRequest(prompt=prompt, max_steps=max_steps)
        try:
            reply = await stub.GetPlan(
                request, timeout=self.timeout_seconds, metadata=self._metadata()
            )
        except grpc.RpcError as exc:
            raise GatewayError.from_rpc_error(exc) from None
        return PlanResult(
            steps=list(reply.steps),
            model=reply.model,
            latency_ms=reply.latency_ms,
            backend=reply.backend,
        )

    async def stream_plan(self, prompt: str, max_steps: int = 0) -> AsyncIterator[PlanChunk]:
        """Yield the plan step by step; the last chunk has ``done=True``.

        The whole stream shares one deadline of ``timeout_seconds``. A
        failure, even after some steps, raises :class:`GatewayError`.
        """
        stub = self._get_stub()
        request = model_gateway_pb2.PlanRequest(prompt=prompt, max_steps=max_steps)
        call = stub.StreamPlan(request, timeout=self.timeout_seconds, metadata=self._metadata())
        try:
            async for chunk in call:
                yield PlanChunk(index=chunk.index, step=chunk.step, done=chunk.done)
        except grpc.RpcError as exc:
            raise GatewayError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def decide(
        self, conversation: Conversation, timeout_seconds: float | None = None
    ) -> DecisionResult:
        """The model's next action in ``conversation``; raise :class:`GatewayError` on failure.

        The deadline is ``timeout_seconds`` when given (an agent's run may
        have less time left than the client's default), else the default.
        """
        stub = self._get_stub()
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        try:
            reply = await stub.Decide(
                conversation_to_proto(conversation), timeout=timeout, metadata=self._metadata()
            )
        except grpc.RpcError as exc:
            raise GatewayError.from_rpc_error(exc) from None
        return decision_from_proto(reply)

    async def close(self) -> None:
        """Close the channel; the client can be used again afterwards."""
        channel, loop = self._channel, self._loop
        self._channel, self._stub, self._loop = None, None, None
        if channel is not None and loop is asyncio.get_running_loop():
            await channel.close()
