"""``POST /api/v1/execute_tool``: one tool run, audited and counted whatever its fate.

The checks themselves are :meth:`sandbox.service.Sandbox.execute`'s; this
route turns its outcome into the audit record and the metrics.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from pagi.app import model_response
from pagi.errors import ApiError
from pagi.request_id import current_request_id
from sandbox.audit import utc_now
from sandbox.models import ExecuteToolRequest, ExecuteToolResponse
from sandbox.service import RunFailure, Sandbox


def _new_record() -> dict[str, Any]:
    return {
        "time": utc_now(),
        "kind": "execute_tool",
        "request_id": current_request_id(),
        "caller": None,
        "actor": None,
        "tool": None,
        "code_sha256": None,
        "code_bytes": None,
        "policy_version": None,
        "decision": None,
        "status": None,
        "reason": None,
        "outcome": None,
        "files_in": None,
        "files_out": None,
        "duration_ms": None,
    }


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` inlined: an OpenAPI document has no ``$defs``."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def build_execute_router(sandbox: Sandbox) -> APIRouter:
    """``POST /api/v1/execute_tool``: run a tool, audit and count every request."""
    router = APIRouter(prefix="/api/v1", tags=["sandbox"])

    @router.post(
        "/execute_tool",
        response_model=ExecuteToolResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline_schema(ExecuteToolRequest)}},
            }
        },
        responses={
            400: {"description": "code not accepted by this tool"},
            401: {"description": "missing or invalid token"},
            403: {"description": "the caller may not run this tool"},
            404: {"description": "no such tool"},
            413: {"description": "code or body too large"},
            422: {"description": "malformed body"},
            429: {"description": "queue full; see Retry-After"},
            503: {"description": "isolation layer missing, audit log unwritable, run failed"},
        },
    )
    async def execute_tool(request: Request) -> Response:
        """Run a tool of the policy, as the token's subject, and audit it."""
        started = time.monotonic()
        record = _new_record()
        error: str | None = "internal_error"
        try:
            response = await sandbox.execute(request, record)
            record.update(decision="allowed", status=200)
            error = None
            return model_response(response)
        except ApiError as exc:
            decision = "failed" if isinstance(exc, RunFailure) else "refused"
            reason = exc.detail if isinstance(exc.detail, str) else exc.error
            record.update(decision=decision, status=exc.status_code, reason=reason)
            error = exc.error
            raise
        except asyncio.CancelledError:
            record.update(decision="failed", status=499, reason="request cancelled")
            error = "cancelled"
            raise
        except Exception as exc:
            record.update(decision="failed", status=500, reason=repr(exc))
            raise
        finally:
            record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            await sandbox.audit.write(record)
            sandbox.count(record, error)

    return router
