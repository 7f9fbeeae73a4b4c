"""``POST /api/v1/echo``: answers alone, calls nothing (a wiring check must not recurse)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bff.models import EchoRequest, EchoResponse
from pagi.app import Caller, RequestId
from pagi.errors import ErrorBody

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not JSON."},
    401: {"model": ErrorBody, "description": "Missing or invalid token (audience bff)."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}

router = APIRouter(tags=["echo"], responses=_ERRORS)


@router.post("/api/v1/echo", response_model=EchoResponse, summary="Wiring check")
async def echo(body: EchoRequest, caller: Caller, request_id: RequestId) -> EchoResponse:
    """Answer with the body received and the request id it came with."""
    return EchoResponse(received=body, request_id=request_id)
