"""``GET /api/v1/audit``: the newest audit records, for operators (``PAGI_OPERATORS``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from pagi.app import Caller
from pagi.errors import ApiError
from sandbox.audit import last_lines
from sandbox.service import Sandbox

MAX_AUDIT_RECORDS = 500


class AuditTail(BaseModel):
    """``GET /api/v1/audit``: the newest audit records, oldest first."""

    count: int
    records: list[dict[str, Any]] = Field(
        description="As written to the audit file: execute_tool requests (caller, actor, tool,"
        " decision, status, outcome...), policy and service events."
    )


def _read_audit(path: Path, limit: int) -> list[dict[str, Any]]:
    try:
        lines = last_lines(path, limit)
    except FileNotFoundError:
        return []
    records = []
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {"kind": "unreadable", "text": raw[:200].decode("utf-8", "replace")}
        records.append(record)
    return records


def build_audit_router(sandbox: Sandbox) -> APIRouter:
    """``GET /api/v1/audit``: the newest audit records, for operators."""
    router = APIRouter(prefix="/api/v1", tags=["sandbox"])
    operators = sandbox.settings.operators

    @router.get(
        "/audit",
        response_model=AuditTail,
        responses={
            401: {"description": "missing or invalid token"},
            403: {"description": "the caller does not have the operator role"},
            503: {"description": "the audit file cannot be read"},
        },
    )
    async def audit_tail(
        caller: Caller,
        limit: int = Query(50, ge=1, le=MAX_AUDIT_RECORDS, description="How many records."),
    ) -> AuditTail:
        """The newest audit records, for people and identities with the operator role."""
        if caller.subject not in operators:
            raise ApiError(
                403,
                "forbidden",
                "the audit log is for operators (PAGI_OPERATORS)",
                caller=caller.subject,
            )
        try:
            records = await asyncio.to_thread(_read_audit, sandbox.audit.path, limit)
        except OSError as exc:
            raise ApiError(
                503, "audit_unavailable", f"cannot read the audit file: {exc.strerror or exc}"
            ) from None
        return AuditTail(count=len(records), records=records)

    return router
