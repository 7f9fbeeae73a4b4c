"""``/api/v1/runs``: work a goal with tools, live or to the end, and read runs back.

The routes are built per app (:func:`build_runs_router`) around the request
model whose budgets are bounded by that app's ceilings, so the OpenAPI
schema states the ceilings and a budget above one is refused like any
invalid field. (No postponed annotations here: the routes' signatures name
that model, a value of the builder.)

A run belongs to its caller (the token's subject: for a console user, the
person the bff acts for). Reading runs, a caller sees only their own; the
people and identities of ``PAGI_OPERATORS`` see every run. Another
caller's run is answered ``404``, as if it did not exist.
"""

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agent.run_models import RunAnswer, RunList
from agent.run_service import ActiveRun, RunService
from agent.run_store import RunStoreError
from pagi.app import Caller, RequestId, model_response, refuse_other_methods
from pagi.auth import Claims
from pagi.errors import ApiError, error_responses
from pagi.logging import log_event
from pagi.run_request import RUN_ID_PATTERN, SSE_RUN_EVENT_SCHEMA, RunRequest
from pagi.sse import KEEPALIVE, MEDIA_TYPE, STREAM_HEADERS, sse_event, stream_response

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 10.0

_ERRORS = error_responses(
    {
        400: "The body is not JSON.",
        401: "Missing or invalid token (audience agent).",
        413: "Request body too large.",
        422: "Invalid request, or a budget above its ceiling.",
    }
)
_BUSY = error_responses({429: "Too many runs at once; see Retry-After."})
_MEMORY = error_responses({503: "Memory cannot read runs now; see Retry-After."})

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="The run's id (run_<32 hex>).")]


def _runs(request: Request) -> RunService:
    return request.app.state.runs


def _sees_every_run(request: Request, caller: Claims) -> bool:
    return caller.subject in request.app.state.operators


def _unavailable(exc: RunStoreError) -> ApiError:
    return ApiError(503, "memory_unavailable", exc.reason, headers={"Retry-After": "1"})


class RunEventStream(StreamingResponse):
    """The run's events; however the response ends, a run still going is cancelled."""

    def __init__(self, active: ActiveRun) -> None:
        super().__init__(_events(active), media_type=MEDIA_TYPE, headers=STREAM_HEADERS)
        self.active = active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            task = self.active.task
            if task is not None and not task.done():
                log_event(logger, "run_stream_closed", run_id=self.active.record.id)
                task.cancel()


async def _events(active: ActiveRun):  # noqa: ANN202 - an async generator of bytes
    async for item in active.stream(KEEPALIVE_SECONDS):
        if item is None:
            yield KEEPALIVE
            continue
        sequence, event, data = item
        yield sse_event(event, data, event_id=sequence)


def build_runs_router(request_model: type[RunRequest]) -> APIRouter:
    """The run routes, taking ``request_model`` (see :func:`pagi.run_request.run_request_model`)."""
    router = APIRouter(tags=["runs"], responses=_ERRORS)

    @router.post(
        "/api/v1/runs",
        response_model=RunAnswer,
        summary="Work a goal with the sandbox's tools; answered when the run ends",
        responses=_BUSY,
    )
    async def create_run(
        body: request_model,  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        request_id: RequestId,
    ) -> Any:
        """Run the goal to its end: the finished run (also when a budget or the model ended it).

        A client that disconnects cancels the run and the tool run in flight.
        """
        active = _runs(request).start(
            body, caller.subject, request_id, streamed=False, actor=caller.actor
        )
        assert active.task is not None
        try:
            record = await asyncio.shield(active.task)
        except asyncio.CancelledError:
            active.task.cancel()
            raise
        recorder = active.recorder
        return model_response(
            RunAnswer(run=record, stored=recorder.stored_final, store_error=recorder.last_error)
        )

    @router.post(
        "/api/v1/runs/stream",
        summary="Work a goal, its steps sent as server-sent events as they happen",
        response_class=StreamingResponse,
        responses={
            200: stream_response(
                "`run.started`, then `model.message`, `tool.call`, `tool.result` as they happen,"
                " then `run.completed` (status, reason, answer, usage); each with an `id`. A"
                " client that disconnects cancels the run and any tool run in flight.",
                SSE_RUN_EVENT_SCHEMA,
            ),
            **_BUSY,
        },
    )
    async def stream_run(
        body: request_model,  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        request_id: RequestId,
    ) -> StreamingResponse:
        """Start the run and stream its events."""
        active = _runs(request).start(
            body, caller.subject, request_id, streamed=True, actor=caller.actor
        )
        return RunEventStream(active)

    refuse_other_methods(router, "/api/v1/runs/stream", ("POST",))
    refuse_other_methods(router, "/api/v1/runs", ("GET", "POST"))

    @router.get(
        "/api/v1/runs",
        response_model=RunList,
        summary="Recent runs (the caller's own; every run for operators), newest first",
        responses=_MEMORY,
    )
    async def list_runs(
        request: Request,
        caller: Caller,
        limit: int = Query(20, ge=1, le=100, description="How many runs (1..100)."),
    ) -> RunList:
        """Summaries of the latest runs, as memory holds them."""
        only = None if _sees_every_run(request, caller) else caller.subject
        try:
            runs = await _runs(request).recent(limit, only)
        except RunStoreError as exc:
            raise _unavailable(exc) from None
        return RunList(count=len(runs), runs=runs)

    @router.get(
        "/api/v1/runs/{run_id}",
        response_model=RunAnswer,
        summary="One run: live while it goes on, else as memory recorded it",
        responses={
            **error_responses({404: "No run with this id for this caller."}),
            **_MEMORY,
        },
    )
    async def get_run(run_id: RunId, request: Request, caller: Caller) -> Any:
        """The run with this id."""
        try:
            found = await _runs(request).get(run_id)
        except RunStoreError as exc:
            raise _unavailable(exc) from None
        visible = found is not None and (
            found[0].caller == caller.subject or _sees_every_run(request, caller)
        )
        if found is None or not visible:
            raise ApiError(404, "run_not_found", f"no run with id {run_id!r}")
        record, stored = found
        return model_response(RunAnswer(run=record, stored=stored))

    return router
