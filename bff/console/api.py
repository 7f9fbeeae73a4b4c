"""The console's API (``/console/api/...``): what the page shows, asked for the signed-in person.

Every call the bff makes here for a person carries a token acting for that
person (:mod:`bff.console.people`): the sandbox and the agent authorize the
person by the policy's callers and ``PAGI_OPERATORS``, never the bff's own
entry. Downstream refusals come back with their status and detail, for the
page to show. (No postponed annotations here: the run route's signature
names the request model built for the app.)
"""

import asyncio
import logging
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from bff.console.charts import ChartHistory, ChartSeries
from bff.console.guard import (
    ConsoleChange,
    ConsoleUser,
    clear_session_cookie,
    cookie_value,
    require_same_origin,
    sessions_of,
    set_session_cookie,
)
from bff.console.models import (
    Overview,
    ServiceHealth,
    SessionInfo,
    SignedOut,
    SignIn,
    ToolRequest,
)
from bff.console.sessions import Session
from bff.fanout import DownstreamCall, call_downstream
from bff.runs import relay_run
from pagi import SERVICES
from pagi.app import RequestId, refuse_other_methods
from pagi.auth import SIGN_IN_ISSUER, AuthError, is_person
from pagi.errors import ApiError, ErrorBody
from pagi.health import check_service
from pagi.logging import log_event
from pagi.metric_catalogue import CONSOLE_SIGN_INS
from pagi.request_id import current_request_id
from pagi.run_request import RUN_ID_PATTERN, RunRequest

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 1.0
PASSED_STATUSES = frozenset({400, 403, 404, 409, 413, 422, 429, 503})
"""A downstream refusal the page is shown with its own status; any other is a 502."""


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    words = {
        400: "The body is not JSON, or the service refused the request.",
        401: "Signed out: no session, or it ended (sign in with a link from `pagi console`).",
        403: "Another site's request, a missing CSRF token, or the service refused the person.",
        404: "Not found (for this person).",
        409: "The service refused the change.",
        413: "Too large.",
        422: "Invalid request.",
        429: "The service is busy; see Retry-After.",
        502: "The service is unreachable or answered something else.",
        503: "The service cannot answer now.",
    }
    return {status: {"model": ErrorBody, "description": words[status]} for status in statuses}


READING = _errors(401, 422)
RELAYED = _errors(*sorted(PASSED_STATUSES | {401, 502}))

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN)]


def _info(request: Request, session: Session) -> SessionInfo:
    return SessionInfo(
        person=session.person,
        role=session.role,  # type: ignore[arg-type]
        started_at=session.started_at,
        expires_at=session.expires_at,
        idle_seconds=sessions_of(request).idle_seconds,
        csrf_token=session.csrf_token,
    )


def _refused(reason: str) -> ApiError:
    CONSOLE_SIGN_INS.labels("refused").inc()
    log_event(logger, "console_sign_in_refused", logging.WARNING, reason=reason)
    return ApiError(401, "sign_in_refused", reason)


async def _as_person(
    request: Request,
    session: Session,
    service: str,
    method: str,
    path: str,
    timeout: float | None = None,
    **call: Any,
) -> JSONResponse:
    """Call ``service`` for the signed-in person; its answer, or its refusal with its status."""
    headers = request.app.state.person_tokens.headers(session.person, service)
    outcome = await call_downstream(
        DownstreamCall(
            service,
            service,
            request.app.state.clients[service],
            method,
            path,
            headers=headers,
            **call,
        ),
        timeout or request.app.state.timeout_seconds,
    )
    if outcome.ok:
        return JSONResponse(outcome.body)
    status = outcome.body.get("status_code")
    if status not in PASSED_STATUSES:
        status = 502
    return JSONResponse(
        {
            "error": "downstream_refused" if status != 502 else "downstream_unavailable",
            "detail": outcome.body.get("detail") or outcome.body.get("error"),
            "service": service,
            "request_id": current_request_id(),
        },
        status_code=status,
    )


def build_console_router(request_model: type[RunRequest]) -> APIRouter:
    """The console's API routes; ``request_model`` bounds run requests as the agent does."""
    router = APIRouter(prefix="/console/api", tags=["console"], responses=READING)
    # First: paths served by several methods, or that another route's template
    # also matches (/runs/{run_id}): a wrong method is a 405 naming the right ones.
    refuse_other_methods(router, "/session", ("GET", "POST", "DELETE"))
    refuse_other_methods(router, "/runs/stream", ("POST",))

    # ------------------------------------------------------------- session

    @router.post(
        "/session",
        response_model=SessionInfo,
        summary="Sign in with a link's token",
        responses=_errors(400, 403, 413),
    )
    async def sign_in(body: SignIn, request: Request, response: Response) -> SessionInfo:
        """Open a session for the person a sign-in link names; each link works once."""
        require_same_origin(request)
        state = request.app.state
        try:
            claims = state.console_verifier.verify(body.token)
        except AuthError as exc:
            raise _refused(exc.reason) from None
        if claims.issuer != SIGN_IN_ISSUER:
            raise _refused("sign-in links are signed with the operator's key")
        if claims.expires_at - claims.issued_at > state.console_sign_in_max_seconds:
            raise _refused("the sign-in link lives too long")
        if not is_person(claims.subject):
            raise _refused("a sign-in link must name a person")
        if not state.console_used_links.use(claims.jti, claims.expires_at):
            raise _refused("this sign-in link was used already")
        sessions = sessions_of(request)
        sessions.end(cookie_value(request))  # a sign-in always starts a new session
        cookie, session = sessions.start(claims.subject, claims.subject in state.operators)
        set_session_cookie(request, response, cookie, sessions.lifetime_seconds)
        CONSOLE_SIGN_INS.labels("ok").inc()
        log_event(logger, "console_signed_in", person=session.person, role=session.role)
        return _info(request, session)

    @router.get("/session", response_model=SessionInfo, summary="Who is signed in")
    async def session_info(request: Request, session: ConsoleUser) -> SessionInfo:
        """The session, and the CSRF token the page sends with each change."""
        return _info(request, session)

    @router.delete("/session", response_model=SignedOut, summary="Sign out", responses=_errors(403))
    async def sign_out(request: Request, response: Response, session: ConsoleChange) -> SignedOut:
        """End the session on the server and drop the cookie."""
        sessions_of(request).end(cookie_value(request))
        clear_session_cookie(response)
        log_event(logger, "console_signed_out", person=session.person)
        return SignedOut()

    # ------------------------------------------------------------- reading

    @router.get("/overview", response_model=Overview, summary="The services and the sandbox")
    async def overview(request: Request, session: ConsoleUser) -> Overview:
        """Each service's health; the sandbox's isolation report, policy, audit and queue."""
        settings = request.app.state.settings
        answers = await asyncio.gather(
            *(
                asyncio.to_thread(check_service, name, settings, HEALTH_TIMEOUT_SECONDS)
                for name in SERVICES
            )
        )
        health = dict(zip(SERVICES, answers, strict=True))
        sandbox = health["sandbox"]
        report = None
        if sandbox.get("ok"):
            report = {
                key: sandbox[key]
                for key in ("isolation", "policy", "audit", "admission")
                if key in sandbox
            }
        services = {
            name: ServiceHealth(
                ok=bool(answer.get("ok")),
                status=answer.get("status"),
                version=answer.get("version"),
                error=answer.get("error"),
            )
            for name, answer in health.items()
        }
        return Overview(services=services, sandbox=report)

    @router.get("/policy", summary="The policy in force, as the person sees it", responses=RELAYED)
    async def policy(request: Request, session: ConsoleUser) -> JSONResponse:
        """The sandbox's policy status: version, last refused edit, summary, the person's tools."""
        return await _as_person(request, session, "sandbox", "GET", "/api/v1/policy")

    @router.get("/tools", summary="The tools the person may run", responses=RELAYED)
    async def tools(request: Request, session: ConsoleUser) -> JSONResponse:
        """The sandbox's tool list for the person."""
        return await _as_person(request, session, "sandbox", "GET", "/api/v1/tools")

    @router.get("/audit", summary="The newest audit records (operators)", responses=RELAYED)
    async def audit(
        request: Request, session: ConsoleUser, limit: int = Query(50, ge=1, le=500)
    ) -> JSONResponse:
        """The sandbox's audit tail; the sandbox refuses people without the operator role."""
        return await _as_person(
            request, session, "sandbox", "GET", "/api/v1/audit", params={"limit": limit}
        )

    @router.get("/runs", summary="Recent agent runs the person may see", responses=RELAYED)
    async def runs(
        request: Request, session: ConsoleUser, limit: int = Query(20, ge=1, le=100)
    ) -> JSONResponse:
        """The agent's run list for the person (their own; every run for operators)."""
        return await _as_person(
            request, session, "agent", "GET", "/api/v1/runs", params={"limit": limit}
        )

    @router.get("/runs/{run_id}", summary="One run with its steps", responses=RELAYED)
    async def run(request: Request, session: ConsoleUser, run_id: RunId) -> JSONResponse:
        """The agent's record of the run, if the person may see it."""
        return await _as_person(request, session, "agent", "GET", f"/api/v1/runs/{run_id}")

    @router.get("/charts", response_model=ChartSeries, summary="Runs, latency and queue over time")
    async def charts(request: Request, session: ConsoleUser) -> ChartSeries:
        """The last ten minutes, read from the sandbox's and the agent's metrics."""
        history: ChartHistory = request.app.state.console_charts
        await history.refresh()
        return history.series()

    # ------------------------------------------------------------- changing

    @router.post("/execute", summary="Run a tool as the person", responses=RELAYED)
    async def execute(request: Request, session: ConsoleChange, body: ToolRequest) -> JSONResponse:
        """The sandbox's answer: the run's result, or its refusal (403 for a tool not theirs)."""
        return await _as_person(
            request,
            session,
            "sandbox",
            "POST",
            "/api/v1/execute_tool",
            timeout=request.app.state.console_tool_timeout_seconds,
            body=body.model_dump(exclude_none=True),
        )

    @router.post(
        "/runs/stream",
        summary="Work a goal as the person; its events as they happen",
        responses={**RELAYED, 200: {"content": {"text/event-stream": {}}}},
    )
    async def run_stream(
        request: Request,
        session: ConsoleChange,
        request_id: RequestId,
        body: request_model,  # type: ignore[valid-type]
    ) -> Response:
        """The agent's run events, relayed; the run is the person's."""
        headers = request.app.state.person_tokens.headers(session.person, "agent")
        log_event(logger, "console_run_started", person=session.person)
        return await relay_run(request, body, request_id, headers=headers)

    return router


async def read_metrics(
    clients: dict[str, httpx.AsyncClient], scrape_token: str | None, service: str
) -> str | None:
    """``service``'s ``/metrics`` text for the charts, None when it cannot be read."""
    headers = {"Authorization": f"Bearer {scrape_token}"} if scrape_token else {}
    try:
        response = await clients[service].get("/metrics", headers=headers)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None
