"""The gateway's gRPC calls in ``/metrics``: count and time of every call, by method and code.

The outermost server interceptor, so that calls refused by the auth
interceptor (UNAUTHENTICATED, PERMISSION_DENIED) are counted too. Only
methods the server serves are labels: a call to an unknown method is
answered UNIMPLEMENTED by gRPC itself and never reaches a handler here.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from pagi.metric_catalogue import GRPC_DURATION, GRPC_REQUESTS

Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def _code_name(context: grpc.aio.ServicerContext, failure: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    if failure is not None and not isinstance(failure, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN.name
    return grpc.StatusCode.OK.name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call of a served method."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        """Wrap the method's handler so its end is recorded."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def record(context: grpc.aio.ServicerContext, started: float, failure: Any) -> None:
            GRPC_REQUESTS.labels(method, _code_name(context, failure)).inc()
            GRPC_DURATION.labels(method).observe(time.perf_counter() - started)

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def timed_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                failure: BaseException | None = None
                try:
                    answer = unary(request, context)
                    return await answer if inspect.isawaitable(answer) else answer
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    record(context, started, failure)

            return grpc.unary_unary_rpc_method_handler(
                timed_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def timed_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                failure: BaseException | None = None
                try:
                    messages = streaming(request, context)
                    if inspect.isawaitable(messages):  # a handler that writes with context.write
                        await messages
                    else:
                        async for message in messages:
                            yield message
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    record(context, started, failure)

            return grpc.unary_stream_rpc_method_handler(
                timed_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming requests: health's Watch and reflection are not timed
