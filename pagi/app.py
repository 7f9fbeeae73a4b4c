"""The FastAPI application factory every HTTP service starts from.

It wires, once for all services: request ids, JSON errors, a request body
size limit, the open ``GET /health`` and the bearer-token dependency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pagi import __version__
from pagi.auth import AuthError, Claims, TokenVerifier, bearer_token
from pagi.errors import ApiError, error_response, install_error_handlers
from pagi.metrics import HttpMetricsMiddleware, metrics_of, metrics_router
from pagi.request_id import RequestIdMiddleware, current_request_id
from pagi.tracing import annotate_request_id, skip_tracing, tracing_active

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class HealthResponse(BaseModel):
    """``GET /health``: the contract's three fields, plus any a service adds."""

    model_config = ConfigDict(extra="allow")

    service: str
    status: str
    version: str


HealthExtra = Callable[[Request], Awaitable[dict[str, Any]]]


class BodySizeLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` with 413, before the app reads them.

    ``max_bytes`` may be a callable, read once per request, for limits that
    follow a configuration reloaded at runtime.
    """

    def __init__(self, app: ASGIApp, max_bytes: int | Callable[[], int]) -> None:
        self.app = app
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        """The limit in force now."""
        return self._max_bytes() if callable(self._max_bytes) else self._max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > max_bytes:
                    await self._refuse(scope, receive, send, max_bytes)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send, max_bytes)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = error_response(
            413, "payload_too_large", f"request body exceeds {max_bytes} bytes"
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_app(
    service: str,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    health_extra: HealthExtra | None = None,
    max_body_bytes: int | Callable[[], int] = DEFAULT_MAX_BODY_BYTES,
    metrics_token: str | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app for ``service`` with PAGI's middleware, errors, ``/health`` and ``/metrics``.

    ``metrics_token`` (see :meth:`pagi.settings.CommonSettings.metrics_token`)
    makes ``/metrics`` ask for it.
    """
    app = FastAPI(
        title=f"PAGI {service}",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's own telemetry makes the HTTP server spans when tracing is
        # on (pagi.tracing); metrics are prometheus-client's, logs PAGI's own.
        telemetry={
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": skip_tracing,
        },
        **fastapi_kwargs,
    )
    app.state.service_name = service
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    # Added after the body limit so that it wraps it: even a 413 carries the request id.
    app.add_middleware(
        RequestIdMiddleware, annotate=annotate_request_id if tracing_active() else None
    )
    # Outermost of PAGI's middleware: every answer is counted, refusals included.
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics_of(service))
    app.include_router(metrics_router(service, metrics_token))

    @app.get("/health", response_model=HealthResponse, tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"service": service, "status": "ok", "version": __version__}
        if health_extra is not None:
            body.update(await health_extra(request))
        return body

    return app


def require_caller(request: Request) -> Claims:
    """Dependency: the verified caller of this request, or 401 JSON."""
    verifier: TokenVerifier | None = getattr(request.app.state, "verifier", None)
    if verifier is None:
        raise ApiError(503, "service_unavailable", "authentication is not configured")
    try:
        return verifier.verify(bearer_token(request.headers.get("authorization")))
    except AuthError as exc:
        raise ApiError(
            401, "unauthorized", exc.reason, headers={"WWW-Authenticate": "Bearer"}
        ) from None


def model_response(model: BaseModel) -> Response:
    """A 200 JSON answer of a model the service built itself, serialised once.

    Returned from a route that still declares the model as its
    ``response_model`` (for the OpenAPI schema): FastAPI would otherwise
    validate the already valid model a second time on the way out.
    """
    return Response(model.model_dump_json(), media_type="application/json")


async def caller_dependency(request: Request) -> Claims:
    """:func:`require_caller` as a dependency.

    A coroutine on purpose: FastAPI runs a plain-function dependency in its
    thread pool, a thread hop on every request for microseconds of work.
    """
    return require_caller(request)


Caller = Annotated[Claims, Depends(caller_dependency)]
"""Annotate a route parameter with this to require a valid token."""


async def request_id_dependency() -> str | None:
    """Dependency: the id of the request being served."""
    return current_request_id()


RequestId = Annotated[str | None, Depends(request_id_dependency)]


_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE")


def refuse_other_methods(router: APIRouter, path: str, allowed: Sequence[str]) -> None:
    """Answer every method ``path`` does not serve with 405 naming all those it does.

    Needed where several routes share a path: the router's own 405 names
    only the first route's method in ``Allow``.
    """
    allow = ", ".join(allowed)

    async def other_methods() -> None:
        raise ApiError(
            405, "method_not_allowed", f"use {' or '.join(allowed)}", headers={"Allow": allow}
        )

    others = [method for method in _METHODS if method not in allowed]
    router.add_api_route(path, other_methods, methods=others, include_in_schema=False)
