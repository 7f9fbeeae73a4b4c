"""``POST /api/v1/plan`` and ``POST /api/v1/plan/stream``."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import WithJsonSchema

from agent.budget import MAX_BUDGET_MS, answer_by, within
from agent.gateway_calls import ask_for_plan, stream_plan_events
from agent.models import DownstreamFailure, LlmResponse, PlanRequest, PlanResponse
from agent.wiring import echo_via_bff, store_plan
from pagi.app import Caller, RequestId
from pagi.errors import error_responses
from pagi.http import TIMEOUT_HEADER
from pagi.logging import log_event
from pagi.sse import MEDIA_TYPE, STREAM_HEADERS

logger = logging.getLogger(__name__)

_ERRORS = error_responses(
    {
        400: "The gateway refused the prompt.",
        401: "Missing or invalid token (audience agent).",
        413: "Request body too large.",
        422: "Invalid request (empty or too long prompt).",
    }
)
_GATEWAY_ERRORS = error_responses(
    {
        502: "The model gateway is down or failed.",
        503: "The model gateway is overloaded.",
        504: "The model gateway did not answer in time.",
    }
)

# One server-sent event as a client parses it; ``data`` is one line of JSON.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["step", "done", "error"]},
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}

router = APIRouter(tags=["plan"], responses=_ERRORS)


@router.post(
    "/api/v1/plan",
    response_model=PlanResponse,
    summary="Plan with the model gateway, check the bff wiring, store the plan",
    responses=_GATEWAY_ERRORS,
)
async def plan(
    body: PlanRequest,
    request: Request,
    caller: Caller,
    request_id: RequestId,
    budget_ms: Annotated[
        int | None,
        Header(
            alias=TIMEOUT_HEADER,
            ge=1,
            le=MAX_BUDGET_MS,
            description="The caller's time budget in ms (below 1000 counts as 1000): the"
            " answer (perhaps degraded, or a 504 naming the gateway) comes before it runs out.",
        ),
        # Absent, not null: the header is either sent with a number or not at all.
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_BUDGET_MS}),
    ] = None,
) -> PlanResponse:
    """The gateway's plan; echo and memory failures degrade the answer but never fail it."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    deadline = answer_by(budget_ms, loop.time())
    result, round_trip_ms = await ask_for_plan(
        state.gateway,
        body.prompt,
        state.gateway_timeout_seconds,
        limit_seconds=None if deadline is None else deadline - loop.time(),
    )
    wiring_timeout = within(state.wiring_timeout_seconds, deadline, loop.time())
    content = {
        "prompt": body.prompt,
        "steps": result.steps,
        "model": result.model,
        "backend": result.backend,
        "request_id": request_id,
        "requested_by": caller.subject,
    }
    echo, stored = await asyncio.gather(
        echo_via_bff(state.clients["bff"], request_id, wiring_timeout),
        store_plan(state.clients["memory"], content, wiring_timeout),
    )
    degraded = isinstance(echo, DownstreamFailure) or isinstance(stored, DownstreamFailure)
    if isinstance(echo, DownstreamFailure):
        echo = echo.model_dump(exclude_none=True)
    log_event(
        logger,
        "plan_served",
        status="degraded" if degraded else "ok",
        caller=caller.subject,
        steps=len(result.steps),
        backend=result.backend,
        gateway_ms=round_trip_ms,
    )
    return PlanResponse(
        status="degraded" if degraded else "ok",
        plan=result.steps,
        llm_response=LlmResponse(
            model=result.model,
            backend=result.backend,
            latency_ms=result.latency_ms,
            round_trip_ms=round_trip_ms,
            step_count=len(result.steps),
        ),
        bff_echo=echo,
        memory=stored,
    )


@router.post(
    "/api/v1/plan/stream",
    summary="The plan as server-sent events: step..., then done (or error)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: step` per step, then `event: done`; `event: error` when the"
            " gateway fails.",
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        }
    },
)
async def plan_stream(
    body: PlanRequest, request: Request, caller: Caller, request_id: RequestId
) -> StreamingResponse:
    """Stream the plan as the gateway produces it."""
    state = request.app.state
    events = stream_plan_events(
        state.gateway, body.prompt, state.gateway_timeout_seconds, request_id
    )
    return StreamingResponse(events, media_type=MEDIA_TYPE, headers=STREAM_HEADERS)
