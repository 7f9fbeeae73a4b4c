"""Calling several downstream services at once, each under its own deadline.

A call never raises: a failure, a timeout or an unexpected answer becomes an
``{"error": ...}`` entry, so one slow or dead service cannot delay or break
the others. The whole fan-out takes about as long as the slowest call, and
never more than the deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pagi.http import TIMEOUT_HEADER, read_capped
from pagi.logging import log_event

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1024 * 1024
"""The most a dashboard takes from one downstream answer."""


@dataclass(frozen=True)
class DownstreamCall:
    """One HTTP call to make: ``key`` names its entry in the aggregate."""

    key: str
    service: str
    client: httpx.AsyncClient
    method: str
    path: str
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    """Sent with the call (e.g. a token acting for a person); the client's own otherwise."""


@dataclass(frozen=True)
class Outcome:
    """What one call produced."""

    key: str
    service: str
    ok: bool
    body: dict[str, Any]
    elapsed_ms: float


def _parse_object(content: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(content) if content else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _request(
    call: DownstreamCall, timeout_seconds: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(body, None)`` on success, ``(None, error)`` otherwise."""
    service = call.service
    # Tell the callee how long we wait, so it can answer (degraded) in time.
    budget = {TIMEOUT_HEADER: str(max(1, int(timeout_seconds * 1000))), **(call.headers or {})}
    try:
        async with asyncio.timeout(timeout_seconds):
            async with call.client.stream(
                call.method, call.path, json=call.body, params=call.params, headers=budget
            ) as response:
                content = await read_capped(response.aiter_bytes(), MAX_ANSWER_BYTES)
    except (TimeoutError, httpx.TimeoutException):
        return None, {"error": f"{service} did not answer within {timeout_seconds:g}s"}
    except httpx.ConnectError as exc:
        return None, {"error": f"{service} is unreachable ({type(exc).__name__})"}
    except httpx.HTTPError as exc:
        return None, {"error": f"the call to {service} failed ({type(exc).__name__})"}
    except Exception as exc:  # noqa: BLE001 - one broken call must not break the dashboard
        log_event(logger, "downstream_call_error", logging.ERROR, service=service, error=repr(exc))
        return None, {"error": f"the call to {service} failed ({type(exc).__name__})"}
    if content is None:
        return None, {"error": f"{service} answered more than {MAX_ANSWER_BYTES} bytes"}
    body = _parse_object(content)
    if response.status_code >= 400:
        detail = body.get("detail", body.get("error")) if body else None
        return None, {
            "error": f"{service} answered {response.status_code}",
            "status_code": response.status_code,
            "detail": detail,
        }
    if body is None:
        return None, {"error": f"{service} answered something that is not a JSON object"}
    return body, None


async def call_downstream(call: DownstreamCall, timeout_seconds: float) -> Outcome:
    """Make one call; any failure becomes an error entry naming the service."""
    started = time.perf_counter()
    body, error = await _request(call, timeout_seconds)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    if error is not None:
        error["service"] = call.service
        log_event(
            logger,
            "downstream_failed",
            logging.WARNING,
            service=call.service,
            elapsed_ms=elapsed_ms,
            error=error["error"],
        )
        return Outcome(call.key, call.service, False, error, elapsed_ms)
    return Outcome(call.key, call.service, True, body or {}, elapsed_ms)


async def fan_out(calls: list[DownstreamCall], timeout_seconds: float) -> list[Outcome]:
    """Make every call concurrently; outcomes in the order of ``calls``."""
    return list(await asyncio.gather(*(call_downstream(c, timeout_seconds) for c in calls)))
