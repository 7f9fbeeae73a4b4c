"""``GET /api/v1/policy``: the policy in force, the last refused edit, the caller's tools."""

from __future__ import annotations

from fastapi import APIRouter

from pagi.app import Caller
from sandbox.models import PolicyStatus
from sandbox.service import Sandbox


def build_policy_router(sandbox: Sandbox) -> APIRouter:
    """``GET /api/v1/policy``: the policy in force and what the caller may run."""
    router = APIRouter(prefix="/api/v1", tags=["sandbox"])

    @router.get("/policy", response_model=PolicyStatus)
    async def policy_status(caller: Caller) -> PolicyStatus:
        """The policy in force, the last refused edit, and what the caller may run."""
        store = sandbox.store
        snapshot = store.current
        return PolicyStatus(
            version=snapshot.version,
            loaded_at=snapshot.loaded_at,
            source=str(snapshot.source),
            last_error=store.last_error,
            last_error_at=store.last_error_at,
            last_checked_at=store.last_checked_at,
            caller=caller.subject,
            caller_tools=snapshot.tools_of(caller.subject),
            summary=snapshot.summary(),
        )

    return router
