"""Routes for agent runs: written by id while they go on, read back by id or as a list."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from memory.models import (
    RUN_ID_PATTERN,
    RUN_STATUS_PATTERN,
    RunAnswer,
    RunList,
    RunRecord,
    RunStored,
    RunSummary,
    RunWrite,
)
from memory.records import ERRORS, encode_content, store_of, unavailable
from memory.store import RunFinished, StoredRun, StoreUnavailable
from pagi.app import Caller, refuse_other_methods
from pagi.errors import ApiError, error_responses
from pagi.logging import log_event

logger = logging.getLogger(__name__)

MAX_SUMMARY_BYTES = 4096

router = APIRouter(tags=["runs"], responses=ERRORS)

RunId = Annotated[
    str, Path(pattern=RUN_ID_PATTERN, description="The run's id, as the agent named it.")
]


def _summary(run: StoredRun) -> RunSummary:
    return RunSummary(
        id=run.id,
        status=run.status,
        summary=run.summary,
        created_at=run.created_at,
        updated_at=run.updated_at,
    )


@router.put(
    "/memory/runs/{run_id}",
    response_model=RunStored,
    summary="Create or replace a run; answered after the commit",
    responses={
        201: {"model": RunStored, "description": "The run was created."},
        **error_responses(
            {409: "The run is finished and never changes.", 413: "Summary or document too large."}
        ),
    },
)
async def put_run(
    run_id: RunId, body: RunWrite, request: Request, response: Response, caller: Caller
) -> RunStored:
    """Store the run as it stands now (201 when new, 200 when replaced).

    While its status is ``running`` a run may be written again; once written
    with any other status it is final (the same write again is answered 200,
    a different one 409).
    """
    summary = encode_content(body.summary, MAX_SUMMARY_BYTES)
    document = encode_content(body.document, request.app.state.max_run_bytes)
    try:
        stored, created = await store_of(request).put_run(run_id, body.status, summary, document)
    except RunFinished as exc:
        raise ApiError(409, "run_finished", str(exc)) from None
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    response.status_code = 201 if created else 200
    log_event(
        logger, "run_stored", id=run_id, status=body.status, created=created, caller=caller.subject
    )
    return RunStored(**_summary(stored).model_dump(), created=created)


@router.get(
    "/memory/runs/{run_id}",
    response_model=RunAnswer,
    summary="One run, with its whole document",
    responses=error_responses({404: "No run with this id."}),
)
async def get_run(run_id: RunId, request: Request, caller: Caller) -> RunAnswer:
    """The run with this id."""
    try:
        run = await store_of(request).get_run(run_id)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    if run is None:
        raise ApiError(404, "run_not_found", f"no run with id {run_id!r}")
    return RunAnswer(run=RunRecord(**_summary(run).model_dump(), document=run.document))


refuse_other_methods(router, "/memory/runs/{run_id}", ("GET", "PUT"))


@router.get("/memory/runs", response_model=RunList, summary="Runs, newest first (summaries)")
async def list_runs(
    request: Request,
    caller: Caller,
    limit: int = Query(20, ge=1, le=1000, description="How many runs (1..1000)."),
    status: str | None = Query(
        None, pattern=RUN_STATUS_PATTERN, description="Only runs with this status."
    ),
) -> RunList:
    """Up to ``limit`` runs, the most recently started first."""
    try:
        runs = await store_of(request).list_runs(limit, status)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    return RunList(count=len(runs), runs=[_summary(run) for run in runs])
