"""``GET /api/v1/tools``: the tools the caller may run, as an agent offers them to a model.

Read from the policy snapshot in force at each request, so an edit of the
policy file shows at the next call; a tool the caller's entry does not
name is not listed, nor one that cannot run now for want of its package
environment (``/health`` says why), so an agent never offers a model a tool
that would only answer 503.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from pydantic import BaseModel, Field

from pagi.app import Caller
from sandbox.policy import CodeMode, ToolPolicy
from sandbox.policy.watch import PolicyStore


class ToolInfo(BaseModel):
    """One tool the caller may run."""

    name: str
    description: str
    takes_code: bool = Field(description="Whether a call must carry `code` (the program).")
    code: CodeMode = Field(description="How the code reaches the tool (none, stdin, file, argv).")
    max_code_bytes: int = Field(description="The largest `code` accepted (0 when it takes none).")
    wall_seconds: float = Field(description="How long one run may take before it is killed.")
    output_bytes: int = Field(description="Output kept per stream; the rest is cut.")
    network: bool = Field(description="Whether the tool reaches any network at all.")
    egress_allow: list[str] = Field(
        default_factory=list,
        description="The hosts it may reach through the egress proxy (its policy's allow rules).",
    )
    input_files: int = Field(
        0, description="Files a call may carry (`files`), written into its working dir; 0: none."
    )
    input_bytes: int = Field(0, description="Their decoded size, all together.")
    output_files: int = Field(
        0, description="Files it writes under out/ returned with their content (more are listed)."
    )
    output_file_bytes: int = Field(0, description="Their size, all together.")


class ToolList(BaseModel):
    """The tools the calling token's subject may run under the policy in force."""

    caller: str
    policy_version: str
    tools: list[ToolInfo]


def build_tools_router(
    store: PolicyStore, usable: Callable[[str, ToolPolicy], bool] | None = None
) -> APIRouter:
    """The route listing the caller's tools under ``store``'s current policy (and ``usable``)."""
    router = APIRouter(prefix="/api/v1", tags=["sandbox"])

    @router.get(
        "/tools",
        response_model=ToolList,
        responses={401: {"description": "missing or invalid token"}},
    )
    async def list_tools(caller: Caller) -> ToolList:
        """The tools the caller may run, with what a model needs to call them."""
        snapshot = store.current
        tools = []
        for name in snapshot.tools_of(caller.subject):
            tool = snapshot.document.tools[name]
            if usable is not None and not usable(name, tool):
                continue
            limits = snapshot.limits[name]
            takes_code = tool.code != "none"
            tools.append(
                ToolInfo(
                    name=name,
                    description=tool.description,
                    takes_code=takes_code,
                    code=tool.code,
                    max_code_bytes=tool.max_code_bytes if takes_code else 0,
                    wall_seconds=limits.wall_seconds,
                    output_bytes=limits.output_bytes,
                    network=tool.network is not False,
                    egress_allow=list(tool.egress.allow) if tool.egress else [],
                    input_files=tool.files.input_files,
                    input_bytes=tool.files.input_bytes if tool.files.input_files else 0,
                    output_files=tool.files.output_files,
                    output_file_bytes=tool.files.output_bytes if tool.files.output_files else 0,
                )
            )
        return ToolList(caller=caller.subject, policy_version=snapshot.version, tools=tools)

    return router
