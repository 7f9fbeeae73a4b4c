"""The calls after a plan: the bff echo (wiring check) and storing the plan in memory.

Neither may fail the plan: each answers either its result or a
:class:`DownstreamFailure` saying what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from agent.models import DownstreamFailure, StoredPlan
from pagi.logging import log_event

logger = logging.getLogger(__name__)


async def _post(
    client: httpx.AsyncClient, service: str, path: str, body: dict[str, Any], timeout: float
) -> dict[str, Any] | DownstreamFailure:
    """POST ``body``; the JSON object answered, or a failure naming the service."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.post(path, json=body)
    except (TimeoutError, httpx.TimeoutException):
        failure = DownstreamFailure(error=f"{service} did not answer within {timeout:g}s")
    except httpx.ConnectError as exc:
        failure = DownstreamFailure(error=f"{service} is unreachable ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        failure = DownstreamFailure(error=f"the call to {service} failed ({type(exc).__name__})")
    else:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code < 300 and isinstance(answer, dict):
            return answer
        detail = answer.get("detail", answer.get("error")) if isinstance(answer, dict) else None
        failure = DownstreamFailure(
            error=f"{service} answered {response.status_code}",
            status_code=response.status_code,
            detail=detail,
        )
    log_event(logger, "downstream_failed", logging.WARNING, service=service, error=failure.error)
    return failure


async def echo_via_bff(
    client: httpx.AsyncClient, request_id: str | None, timeout: float
) -> dict[str, Any] | DownstreamFailure:
    """The bff's echo of a ping from the agent."""
    return await _post(
        client, "bff", "/api/v1/echo", {"ping": "agent", "request_id": request_id}, timeout
    )


async def store_plan(
    client: httpx.AsyncClient, content: dict[str, Any], timeout: float
) -> StoredPlan | DownstreamFailure:
    """Store the plan as a ``plan`` record; where it was stored, or the failure."""
    answer = await _post(
        client, "memory", "/api/v1/memory", {"kind": "plan", "content": content}, timeout
    )
    if isinstance(answer, DownstreamFailure):
        return answer
    try:
        return StoredPlan(record_id=answer["id"], created_at=answer["created_at"])
    except (KeyError, ValueError):
        return DownstreamFailure(error="memory answered without a record id")
