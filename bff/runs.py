"""``POST /api/v1/agi/runs/stream``: an agent run's events, passed through to a frontend.

The routes are built per app around the run request model bounded by the
agent's ceilings (read from the same settings), as the agent builds its own.
(No postponed annotations here: the route's signature names that model.)

The bff starts the run on the agent (as itself, with the request's id) and
relays the agent's server-sent events as they come, byte for byte. The
agent's refusals before the stream starts (422, 429, ...) come back as its
JSON answer with its status. A frontend that disconnects closes the bff's
call to the agent, which cancels the run; an agent that breaks off
mid-stream ends the stream with an ``error`` event.
"""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from pagi.app import Caller, RequestId
from pagi.errors import ApiError, error_responses
from pagi.http import read_capped
from pagi.logging import log_event
from pagi.run_request import SSE_RUN_EVENT_SCHEMA, RunRequest
from pagi.sse import MEDIA_TYPE, STREAM_HEADERS, sse_event, stream_response

logger = logging.getLogger(__name__)

STREAM_READ_TIMEOUT_SECONDS = 60.0
"""Longest silence accepted from the agent mid-stream (it sends a keep-alive every 10 s)."""
MAX_REFUSAL_BYTES = 64 * 1024
_PASSED_HEADERS = ("retry-after",)

_ERRORS = error_responses(
    {
        400: "The body is not JSON.",
        401: "Missing or invalid token (audience bff).",
        413: "Request body too large.",
        422: "Invalid request (as the agent judges it).",
        429: "The agent runs too many runs; see Retry-After.",
        502: "The agent is unreachable or failed.",
    }
)

# The agent's events, and the bff's own ``error`` when the agent breaks off.
SSE_SCHEMA: dict[str, Any] = {
    **SSE_RUN_EVENT_SCHEMA,
    "properties": {
        **SSE_RUN_EVENT_SCHEMA["properties"],
        "id": {"type": "string", "description": "The agent's event id (absent on `error`)."},
        "event": {
            "type": "string",
            "enum": [*SSE_RUN_EVENT_SCHEMA["properties"]["event"]["enum"], "error"],
        },
    },
    "required": ["event", "data"],
}


class RelayedStream(StreamingResponse):
    """The agent's event stream; however this response ends, the call to the agent closes."""

    def __init__(self, upstream: httpx.Response, request_id: str | None) -> None:
        super().__init__(
            _relay(upstream, request_id), media_type=MEDIA_TYPE, headers=STREAM_HEADERS
        )
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.upstream.aclose()


async def _relay(upstream: httpx.Response, request_id: str | None) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        log_event(logger, "run_stream_broken", logging.WARNING, error=type(exc).__name__)
        yield sse_event(
            "error",
            {
                "error": "agent_stream_broken",
                "detail": f"the agent's stream broke off ({type(exc).__name__})",
                "request_id": request_id,
            },
        )


async def relay_run(
    request: Request,
    body: RunRequest,
    request_id: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Start ``body``'s run on the agent and answer with its relayed events, or its refusal.

    ``headers`` go with the call (a token acting for a person); by default it
    goes as the bff.
    """
    client: httpx.AsyncClient = request.app.state.clients["agent"]
    connect = request.app.state.timeout_seconds
    outgoing = client.build_request(
        "POST",
        "/api/v1/runs/stream",
        json=body.model_dump(mode="json", exclude_unset=True),
        headers={"Accept": MEDIA_TYPE, **(headers or {})},
        timeout=httpx.Timeout(connect, read=STREAM_READ_TIMEOUT_SECONDS),
    )
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.TimeoutException:
        raise ApiError(
            502, "agent_unavailable", f"the agent did not answer within {connect:g}s"
        ) from None
    except httpx.HTTPError as exc:
        raise ApiError(
            502, "agent_unavailable", f"the agent is unreachable ({type(exc).__name__})"
        ) from None
    if upstream.status_code == 200:
        return RelayedStream(upstream, request_id)
    try:
        raw = await read_capped(upstream.aiter_bytes(), MAX_REFUSAL_BYTES)
    except httpx.HTTPError:
        raw = None
    finally:
        await upstream.aclose()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or upstream.status_code < 400:
        raise ApiError(502, "agent_failed", f"the agent answered {upstream.status_code}")
    passed = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
    return JSONResponse(answer, status_code=upstream.status_code, headers=passed)


def build_runs_router(request_model: type[RunRequest]) -> APIRouter:
    """The run stream route, taking ``request_model`` (bounded by the agent's ceilings)."""
    router = APIRouter(tags=["runs"], responses=_ERRORS)

    @router.post(
        "/api/v1/agi/runs/stream",
        summary="Work a goal with the agent; its events relayed as server-sent events",
        response_class=StreamingResponse,
        responses={
            200: stream_response(
                "The agent's `run.started`, `model.message`, `tool.call`, `tool.result` and"
                " `run.completed` events, each with an id; `error` when the agent breaks off.",
                SSE_SCHEMA,
            )
        },
    )
    async def run_stream(
        body: request_model,  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        request_id: RequestId,
    ) -> Response:
        """Start a run on the agent and relay its events."""
        log_event(logger, "run_stream_requested", caller=caller.subject)
        return await relay_run(request, body, request_id)

    return router
