"""The operator console: a web page the bff serves, and the API the page calls.

``install_console`` adds to the bff app: the page and its files
(:mod:`bff.console.pages`), the API under ``/console/api`` acting for the
signed-in person (:mod:`bff.console.api`), sessions (:mod:`bff.console.sessions`,
:mod:`bff.console.guard`) and the security headers (:mod:`bff.console.headers`).
"""

from __future__ import annotations

from fastapi import FastAPI

from bff.console.api import build_console_router, read_metrics
from bff.console.charts import ChartHistory
from bff.console.headers import ConsoleHeadersMiddleware
from bff.console.pages import build_pages_router
from bff.console.people import PersonTokens
from bff.console.sessions import SessionStore, UsedLinks
from bff.settings import BffSettings
from pagi.auth import SIGN_IN_AUDIENCE, SIGN_IN_ISSUER, TokenSigner, TokenVerifier, TrustStore
from pagi.disconnect import CancelOnDisconnect
from pagi.metric_catalogue import BFF, CONSOLE_SESSIONS
from pagi.run_request import run_request_model


def install_console(
    app: FastAPI, settings: BffSettings, signer: TokenSigner, trust: TrustStore
) -> None:
    """Serve the console from ``app``."""
    state = app.state
    state.settings = settings
    state.operators = settings.operators
    state.console_sessions = sessions = SessionStore(
        settings.pagi_console_session_seconds,
        settings.pagi_console_idle_seconds,
        settings.pagi_console_max_sessions,
    )
    state.console_used_links = UsedLinks()
    # The operator signs sign-in links, for themselves or (acting) for a named person.
    state.console_verifier = TokenVerifier(
        SIGN_IN_AUDIENCE, trust, delegators=frozenset({SIGN_IN_ISSUER})
    )
    state.console_sign_in_max_seconds = settings.pagi_console_sign_in_max_seconds
    state.console_secure_cookie = settings.pagi_console_secure_cookie
    state.console_tool_timeout_seconds = settings.pagi_console_tool_timeout_seconds
    state.person_tokens = PersonTokens(signer)
    scrape_token = settings.metrics_token()
    state.console_charts = ChartHistory(
        lambda service: read_metrics(state.clients, scrape_token, service)
    )
    BFF.refresh_on_scrape("console", lambda: CONSOLE_SESSIONS.labels().set(sessions.count()))
    app.include_router(build_pages_router())
    app.include_router(build_console_router(run_request_model(settings.run_ceilings)))
    # A person who leaves the page mid-run stops the tool run.
    app.add_middleware(CancelOnDisconnect, paths={"/console/api/execute"})
    app.add_middleware(ConsoleHeadersMiddleware)
