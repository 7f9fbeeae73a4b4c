"""``GET /api/v1/agi/dashboard-data``: agent plan, sandbox demo tool and latest memory, at once.

Beside the contract's three entries under ``data``, the answer carries the
latest agent run's summary (``latest_run``), fetched from memory at the same time.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from bff.fanout import DownstreamCall, Outcome, fan_out
from bff.models import DashboardData, DashboardResponse
from pagi.app import RequestId, model_response, require_caller
from pagi.auth import Claims
from pagi.errors import ErrorBody
from pagi.logging import log_event

logger = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "Missing or invalid token (only when PAGI_BFF_DASHBOARD_REQUIRE_TOKEN).",
    },
}

router = APIRouter(tags=["dashboard"], responses=_ERRORS)

LATEST_RUN = "latest_run"


async def dashboard_caller(request: Request) -> Claims | None:
    """The caller, verified only when the dashboard is configured to need a token.

    A coroutine, as :func:`pagi.app.caller_dependency` is (no thread hop).
    """
    if not request.app.state.dashboard_requires_token:
        return None
    return require_caller(request)


DashboardCaller = Annotated[Claims | None, Depends(dashboard_caller)]


def dashboard_calls(request: Request) -> list[DownstreamCall]:
    """The three calls behind the dashboard, keyed as frontends read them."""
    clients = request.app.state.clients
    return [
        DownstreamCall(
            "python_agent",
            "agent",
            clients["agent"],
            "POST",
            "/api/v1/plan",
            {"prompt": request.app.state.dashboard_prompt},
        ),
        DownstreamCall(
            "rust_sandbox",
            "sandbox",
            clients["sandbox"],
            "POST",
            "/api/v1/execute_tool",
            {"tool_name": "demo"},
        ),
        DownstreamCall("memory", "memory", clients["memory"], "GET", "/memory/latest"),
    ]


def latest_run_call(request: Request) -> DownstreamCall:
    """The call for the latest agent run (beside the contract's three, not under ``data``)."""
    clients = request.app.state.clients
    return DownstreamCall(
        LATEST_RUN, "memory", clients["memory"], "GET", "/memory/runs", params={"limit": 1}
    )


def latest_run_of(outcome: Outcome) -> dict[str, Any] | None:
    """The latest run's summary from memory's answer, None when there is no run."""
    if not outcome.ok:
        return outcome.body
    runs = outcome.body.get("runs")
    if not isinstance(runs, list) or not runs:
        return None
    latest = runs[0]
    if not isinstance(latest, dict):
        return {"error": "memory answered a run list that is not one", "service": "memory"}
    summary = latest.get("summary") if isinstance(latest.get("summary"), dict) else {}
    return {"id": latest.get("id"), "status": latest.get("status"), **summary}


@router.get(
    "/api/v1/agi/dashboard-data",
    response_model=DashboardResponse,
    summary="Aggregate agent, sandbox and memory for a frontend",
)
async def dashboard_data(
    request: Request, caller: DashboardCaller, request_id: RequestId
) -> Response:
    """Every downstream is called concurrently; a failed one is named and the rest returned."""
    calls = [*dashboard_calls(request), latest_run_call(request)]
    *outcomes, run_outcome = await fan_out(calls, request.app.state.timeout_seconds)
    failed = [o.service for o in outcomes if not o.ok]
    agent_degraded = any(
        o.key == "python_agent" and o.ok and o.body.get("status") == "degraded" for o in outcomes
    )
    status = "degraded" if failed or agent_degraded else "ok"
    timings = {o.key: o.elapsed_ms for o in outcomes}
    log_event(logger, "dashboard_served", status=status, failed=failed, timings_ms=timings)
    return model_response(
        DashboardResponse(
            status=status,
            request_id=request_id,
            data=DashboardData(**{o.key: o.body for o in outcomes}),
            failed_services=failed,
            timings_ms=timings,
            latest_run=latest_run_of(run_outcome),
        )
    )
