"""Request and response bodies of the console's API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SignIn(BaseModel):
    """``POST /console/api/session``: the token of a sign-in link from ``pagi console``."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=4096)


class SessionInfo(BaseModel):
    """Who is signed in, until when, and the CSRF token their changes must carry."""

    person: str
    role: Literal["operator", "member"]
    started_at: datetime
    expires_at: datetime
    idle_seconds: int = Field(description="A session unused this long ends.")
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every POST and DELETE.")


class SignedOut(BaseModel):
    """``DELETE /console/api/session``."""

    signed_out: bool = True


class ServiceHealth(BaseModel):
    """One service's health as the bff sees it."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    status: str | None = None
    version: str | None = None
    error: str | None = None


class Overview(BaseModel):
    """``GET /console/api/overview``: the five services and the sandbox's own report."""

    services: dict[str, ServiceHealth]
    sandbox: dict[str, Any] | None = Field(
        None,
        description="The sandbox's /health: isolation (layers, warm path, seccomp), policy,"
        " audit, admission; null when it did not answer.",
    )


class ToolRequest(BaseModel):
    """``POST /console/api/execute``: as the sandbox's execute_tool takes it."""

    model_config = ConfigDict(extra="forbid")

    tool_name: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    code: str | None = None
