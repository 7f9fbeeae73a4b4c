"""JSON errors for every HTTP service: never a traceback, never an HTML page.

Every error body has the same shape, :class:`ErrorBody`. Handlers are
installed by :func:`pagi.app.create_app`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pagi.logging import log_event
from pagi.request_id import current_request_id

logger = logging.getLogger("pagi.errors")


class ErrorBody(BaseModel):
    """What every error response carries."""

    error: str
    detail: str | list | dict | None = None
    request_id: str | None = None


class ApiError(Exception):
    """Raise to answer with a JSON error of the given status."""

    def __init__(
        self,
        status_code: int,
        error: str,
        detail: str | list | dict | None = None,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for errors: each status answered with an :class:`ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": description}
        for status, description in descriptions.items()
    }


def error_response(
    status_code: int,
    error: str,
    detail: str | list | dict | None = None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    """A JSON error response in PAGI's one error shape."""
    body = ErrorBody(error=error, detail=detail, request_id=current_request_id()).model_dump()
    body.update(extra)
    return JSONResponse(body, status_code=status_code, headers=headers)


_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "service_unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as JSON, including validation errors and crashes."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.error, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = _REASONS.get(exc.status_code, "http_error")
        return error_response(exc.status_code, error, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", details)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log_event(logger, "unhandled_error", logging.ERROR, error=repr(exc))
        return error_response(500, "internal_error", "the service failed to handle this request")
