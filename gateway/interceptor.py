"""The gateway's server interceptor: JWT check, caller policy, request id, request decoding.

Health and reflection stay open. Every other method needs a token for the
``gateway`` audience (UNAUTHENTICATED otherwise) from an allowed caller
(PERMISSION_DENIED otherwise). The request id from ``x-request-id`` (or a
new one) is bound for the handler's logs, and the request is decoded here so
that bytes which are not a valid message get INVALID_ARGUMENT, not INTERNAL.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import grpc

from pagi.auth import AuthError, TokenVerifier, bearer_token
from pagi.logging import log_event
from pagi.request_id import accept_request_id, request_id_var
from pagi.tracing import annotate_request_id

logger = logging.getLogger(__name__)

OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

caller_var: ContextVar[str | None] = ContextVar("gateway_caller", default=None)
"""The verified caller of the RPC being served."""

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def _metadata_value(metadata: Sequence[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        name, value = item[0], item[1]
        if name.lower() == key:
            if isinstance(value, bytes):
                return value.decode("latin-1")
            return value
    return None


def _refusal(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:
    """A handler of the same shape as ``handler`` that fails with ``code``."""

    async def refuse(_request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    # No deserializer: a refused request's bytes are never parsed.
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _bound(handler: Handler, request_id: str, caller: str) -> Handler:
    """``handler`` with the request decoded here and the request id and caller bound."""
    decode = handler.request_deserializer

    async def parse(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        # Each RPC runs in its own task with its own context copy, so these
        # values need no reset.
        request_id_var.set(request_id)
        caller_var.set(caller)
        annotate_request_id(request_id)
        if decode is None:
            return raw
        try:
            return decode(raw)
        except Exception:  # noqa: BLE001 - any decoding failure is the client's bad input
            log_event(logger, "request_undecodable", logging.WARNING, bytes=len(raw))
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid protobuf message"
            )

    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await behaviour(await parse(raw, context), context)

        return grpc.unary_unary_rpc_method_handler(
            unary, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def stream(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request = await parse(raw, context)
            async for message in streaming(request, context):
                yield message

        return grpc.unary_stream_rpc_method_handler(
            stream, response_serializer=handler.response_serializer
        )
    return handler  # client-streaming methods are not part of this service


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid token from an allowed caller."""

    def __init__(self, verifier: TokenVerifier, allowed_callers: frozenset[str]) -> None:
        self.verifier = verifier
        self.allowed_callers = allowed_callers

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        """Check the caller, then hand over to the method's handler."""
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        metadata = handler_call_details.invocation_metadata
        request_id = accept_request_id(_metadata_value(metadata, "x-request-id"))
        token = request_id_var.set(request_id)
        try:
            try:
                claims = self.verifier.verify(
                    bearer_token(_metadata_value(metadata, "authorization"))
                )
            except AuthError as exc:
                log_event(logger, "auth_refused", logging.WARNING, method=method, reason=exc.reason)
                return _refusal(
                    handler, grpc.StatusCode.UNAUTHENTICATED, f"unauthenticated: {exc.reason}"
                )
            if claims.subject not in self.allowed_callers:
                log_event(
                    logger, "caller_refused", logging.WARNING, method=method, caller=claims.subject
                )
                return _refusal(
                    handler,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"caller {claims.subject!r} may not use the model gateway",
                )
            return _bound(handler, request_id, claims.subject)
        finally:
            request_id_var.reset(token)
