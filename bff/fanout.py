"""Calling several downstream services at once, each under its own deadline.

A call never raises: a failure, a timeout or an unexpected answer becomes an
``{"error": ...}`` entry, so one slow or dead service cannot delay or break
the others. The whole fan-out takes about as long as the slowest call, and
never more than the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pagi.logging import log_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownstreamCall:
    """One HTTP call to make: ``key`` names its entry in the aggregate."""

    key: str
    service: str
    client: httpx.AsyncClient
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one call produced."""

    key: str
    service: str
    ok: bool
    body: dict[str, Any]
    elapsed_ms: float


def _error_detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        return body.get("detail", body.get("error"))
    return None


async def call_downstream(call: DownstreamCall, timeout_seconds: float) -> Outcome:
    """Make one call; any failure becomes an error entry naming the service."""
    started = time.perf_counter()
    error: dict[str, Any] | None = None
    body: Any = None
    try:
        async with asyncio.timeout(timeout_seconds):
            response = await call.client.request(call.method, call.path, json=call.body)
            content = await response.aread()
    except (TimeoutError, httpx.TimeoutException):
        error = {"error": f"{call.service} did not answer within {timeout_seconds:g}s"}
    except httpx.HTTPError as exc:
        error = {"error": f"{call.service} is unreachable ({type(exc).__name__})"}
    else:
        if response.status_code >= 400:
            error = {
                "error": f"{call.service} answered {response.status_code}",
                "status_code": response.status_code,
                "detail": _error_detail(response),
            }
        else:
            try:
                body = response.json() if content else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                error = {"error": f"{call.service} answered something that is not a JSON object"}
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    if error is not None:
        error["service"] = call.service
        log_event(
            logger, "downstream_failed", logging.WARNING, service=call.service,
            elapsed_ms=elapsed_ms, error=error["error"],
        )
        return Outcome(call.key, call.service, False, error, elapsed_ms)
    return Outcome(call.key, call.service, True, body, elapsed_ms)


async def fan_out(calls: list[DownstreamCall], timeout_seconds: float) -> list[Outcome]:
    """Make every call concurrently; outcomes in the order of ``calls``."""
    return list(await asyncio.gather(*(call_downstream(c, timeout_seconds) for c in calls)))
