"""The sandbox service: the checks one ``execute_tool`` request goes through.

In this order (each step answers its own error; the route is
:mod:`sandbox.routes.execute`):

1. token valid (401)                      -- :func:`pagi.app.require_caller`
2. body within the policy's size (413), well-formed (422)
3. caller may run this tool (403)         -- the policy snapshot taken now
4. tool exists (404)
5. code accepted by the tool, size (400 / 413)
6. input files within the tool's rules (400 / 413)   -- :mod:`sandbox.files_in`
7. audit file writable (503), required isolation layers present (503),
   the tool's package environment usable (503)      -- :mod:`sandbox.package_envs`
8. a run slot (429 with Retry-After)      -- :mod:`sandbox.admission`
9. the run                                -- the runner (jail)

and every request, whatever its fate, leaves one audit record and is
counted in the sandbox's metrics (:mod:`pagi.metric_catalogue`).

A token the bff signs for a console user (``sub`` = the person, ``act`` =
bff) is authorized by the person: the audit record names both (``caller``
and ``actor``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from fastapi import Request
from pydantic import ValidationError

from pagi import metric_catalogue as metrics
from pagi.app import require_caller
from pagi.errors import ApiError
from pagi.http import read_capped
from pagi.logging import log_event
from sandbox.admission import Admission, AdmissionRefused
from sandbox.audit import AuditLog
from sandbox.file_audit import files_in_record, files_out_record
from sandbox.files_in import check_input_files, request_bytes
from sandbox.host.runner import RunnerUnavailable
from sandbox.models import ExecuteToolRequest, ExecuteToolResponse, response_of
from sandbox.package_envs import EnvRegistry
from sandbox.policy import (
    INPUT_BYTES_CEILING,
    INPUT_FILES_CEILING,
    MAX_CODE_BYTES_CEILING,
    FileLimits,
    PolicySnapshot,
    ToolPolicy,
)
from sandbox.policy.watch import PolicyStore
from sandbox.settings import SandboxSettings
from sandbox.spec import RunResult, RunSpec
from sandbox.tool_call import check_code, encode_code, run_spec_for

logger = logging.getLogger(__name__)

BODY_MARGIN_BYTES = 16 * 1024
JSON_ESCAPE_FACTOR = 6
"""A byte of code can take up to six bytes in a JSON string (``\\u00XX``)."""


class RunFailure(ApiError):
    """The sandbox failed to run an admitted request (audited as ``failed``, not ``refused``)."""


class ToolRunner(Protocol):
    """What the service needs from the runner (:class:`sandbox.host.runner.Runner`)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def run(self, spec: RunSpec) -> RunResult: ...
    def isolation_report(self) -> dict[str, Any]: ...
    def missing_layers(self, required: Iterable[str]) -> list[str]: ...
    def package_env_mount_problem(self, path: str) -> str | None: ...
    async def reload(self, policy_version: str) -> None: ...


def egress_problem(runner: ToolRunner) -> str | None:
    """Why ``runner`` cannot give a run its egress proxy (None: it can)."""
    problem = getattr(runner, "egress_problem", None)
    if problem is None:
        return "this runner has no egress proxy"
    return problem()  # type: ignore[no-any-return]


def body_limit(snapshot: PolicySnapshot) -> int:
    """The largest request body worth reading under ``snapshot``."""
    files = max((request_bytes(t.files) for t in snapshot.document.tools.values()), default=0)
    return snapshot.largest_code_bytes * JSON_ESCAPE_FACTOR + files + BODY_MARGIN_BYTES


HARD_BODY_LIMIT = (
    MAX_CODE_BYTES_CEILING * JSON_ESCAPE_FACTOR
    + request_bytes(FileLimits(input_files=INPUT_FILES_CEILING, input_bytes=INPUT_BYTES_CEILING))
    + BODY_MARGIN_BYTES
)
"""No request body is read beyond this, whatever the policy (checked before routing)."""

UNKNOWN_TOOL_LABEL = "unknown"
"""The tool label of a request naming no tool of the policy (never the name it sent)."""


def _printable(value: object) -> str:
    """A string safe to put in a JSON error (no lone surrogates)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


class Sandbox:
    """The parts one request goes through; created once per app."""

    def __init__(
        self,
        settings: SandboxSettings,
        store: PolicyStore,
        audit: AuditLog,
        admission: Admission,
        runner: ToolRunner,
        envs: EnvRegistry,
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.admission = admission
        self.runner = runner
        self.envs = envs

    async def apply_policy(self, snapshot: PolicySnapshot) -> None:
        """Make a new policy version govern capacity and the runner."""
        table = snapshot.document.sandbox
        self.admission.configure(
            table.max_concurrent_runs, table.queue_length, table.queue_wait_seconds
        )
        await self.runner.reload(snapshot.version)
        self.envs.configure(snapshot)

    def package_env_problem(self, name: str, tool: ToolPolicy) -> ApiError | None:
        """Why ``tool`` cannot run for want of its package environment (503), if it cannot."""
        env = tool.package_env
        if env is None:
            return None
        state = self.envs.state(env)
        if state is None or not state.ready:
            status = state.status if state is not None else "missing"
            reason = state.reason if state is not None else "not in the policy"
            return ApiError(
                503,
                "package_env_unavailable",
                f"tool {name!r} needs package environment {env!r}, which is {status}: {reason}",
                tool=name,
                package_env=env,
                state=status,
            )
        check = getattr(self.runner, "package_env_mount_problem", None)
        problem = (
            "this sandbox's runner does not mount package environments"
            if check is None
            else check(state.path or "")
        )
        if problem is not None:
            return ApiError(
                503,
                "package_env_unavailable",
                f"tool {name!r} needs package environment {env!r}, which cannot be mounted"
                f" into a jail: {problem}",
                tool=name,
                package_env=env,
                state=state.status,
            )
        return None

    async def execute(self, request: Request, record: dict[str, Any]) -> ExecuteToolResponse:
        """Authorize, admit and run one ``execute_tool`` request, filling ``record``."""
        claims = require_caller(request)
        caller = claims.subject
        record["caller"] = caller
        record["actor"] = claims.actor
        snapshot = self.store.current
        record["policy_version"] = snapshot.version

        body = _parse_body(await _read_body(request, body_limit(snapshot)))
        name = body.tool_name
        record["tool"] = name
        code = encode_code(body.code)
        if code is not None:
            record["code_sha256"] = hashlib.sha256(code).hexdigest()
            record["code_bytes"] = len(code)

        if not snapshot.caller_may_run(caller, name):
            raise ApiError(
                403,
                "forbidden",
                f"caller {caller!r} may not run tool {name!r}",
                caller=caller,
                tool=name,
            )
        tool = snapshot.tool(name)
        if tool is None:
            raise ApiError(404, "unknown_tool", f"no tool named {name!r} in the policy", tool=name)
        check_code(name, tool, code)
        inputs = check_input_files(name, tool, body.files)
        record["files_in"] = files_in_record(inputs)

        if not self.audit.ready():
            raise ApiError(
                503,
                "audit_unavailable",
                "the audit log cannot be written; no tool runs until it can",
            )
        if tool.egress is not None:
            # Fail closed: a tool given an allowlist never silently runs with
            # no network, nor with more of it.
            problem = egress_problem(self.runner)
            if problem is not None:
                raise ApiError(
                    503,
                    "egress_unavailable",
                    f"tool {name!r} reaches the network through the egress proxy, which"
                    f" cannot serve it here ({problem}); nothing ran",
                    tool=name,
                )
        missing = self.runner.missing_layers(snapshot.required_layers)
        if missing:
            raise ApiError(
                503,
                "isolation_unavailable",
                f"required isolation layer(s) not available here: {', '.join(missing)}",
                missing_layers=missing,
            )
        unusable = self.package_env_problem(name, tool)
        if unusable is not None:
            raise unusable

        # Ready (checked above): its interpreter, its directory to mount.
        env = self.envs.state(tool.package_env) if tool.package_env is not None else None
        python = env.python if env is not None and env.python else self.settings.pagi_sandbox_python
        env_path = env.path if env is not None else None
        preload = env.preload if env is not None else ()
        spec = run_spec_for(
            snapshot, name, tool, code, python, env_path, preload, request_id=record["request_id"]
        )
        if inputs:
            # The code file first; no input file may take its name (checked).
            spec = spec.model_copy(
                update={"files": {**spec.files, **{f.path: f.data for f in inputs}}}
            )
        try:
            async with self.admission.slot():
                result = await self._run(spec)
        except AdmissionRefused as exc:
            raise ApiError(
                429,
                "too_many_requests",
                exc.reason,
                headers={"Retry-After": str(exc.retry_after)},
                retry_after=exc.retry_after,
            ) from None
        response = response_of(result, name, snapshot.version, result.files)
        record["files_out"] = files_out_record(result.files)
        record["outcome"] = {
            "tool_status": response.tool_status,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "limit_hit": result.limit_hit,
            "seccomp_refusals": result.seccomp_refusals,
            "seccomp_denials": result.seccomp_denials,
            "denials": [denial.model_dump() for denial in result.denials],
            "stdout_truncated": result.stdout_truncated,
            "stderr_truncated": result.stderr_truncated,
            "run_ms": round(result.duration_ms, 3),
            "executor": result.path,
        }
        if result.network is not None:
            record["outcome"]["network"] = result.network.model_dump(exclude={"denials"})
            # One audit line per decision of the proxy, under the request's id.
            for line in result.egress_audit:
                await self.audit.write(line)
        return response

    def count(self, record: dict[str, Any], error: str | None) -> None:
        """Count one finished request in the metrics (``error``: its error code, if refused)."""
        tool = record.get("tool")
        label = tool if tool in self.store.current.document.tools else UNKNOWN_TOOL_LABEL
        outcome = record.get("outcome")
        if error is not None or outcome is None:
            metrics.TOOL_REFUSALS.labels(label, error or "internal_error").inc()
            return
        metrics.TOOL_RUNS.labels(label, outcome["tool_status"]).inc()
        metrics.TOOL_RUN_DURATION.labels(label, outcome["executor"]).observe(
            outcome["run_ms"] / 1000
        )
        if outcome["seccomp_refusals"]:
            metrics.DENIALS.labels("seccomp").inc(outcome["seccomp_refusals"])
        for denial in outcome["denials"]:
            # seccomp is counted above (kills by the filter included), network below.
            if denial["layer"] not in ("seccomp", "network"):
                metrics.DENIALS.labels(denial["layer"]).inc(denial["count"])
        network = outcome.get("network")
        if network:
            if network["refused"]:
                metrics.DENIALS.labels("network").inc(network["refused"])
            for decision in ("allowed", "refused", "failed"):
                if network[decision]:
                    metrics.EGRESS_DECISIONS.labels(decision).inc(network[decision])
            metrics.EGRESS_BYTES.labels("in").inc(network["bytes_in"])
            metrics.EGRESS_BYTES.labels("out").inc(network["bytes_out"])

    async def _run(self, spec: RunSpec) -> RunResult:
        try:
            return await self.runner.run(spec)
        except RunnerUnavailable as exc:
            log_event(
                logger, "isolation_unavailable", logging.ERROR, tool=spec.tool, error=str(exc)
            )
            raise RunFailure(
                503,
                "isolation_unavailable",
                f"the jail could not be set up, nothing ran: {exc}",
                missing_layers=[exc.layer] if exc.layer else [],
            ) from None
        except Exception as exc:
            log_event(logger, "run_failed", logging.ERROR, tool=spec.tool, error=repr(exc))
            raise RunFailure(503, "run_failed", "the sandbox failed to run the tool") from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    body = None if too_large else await read_capped(request.stream(), limit)
    if body is None:
        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    return body


def _parse_body(raw: bytes) -> ExecuteToolRequest:
    try:
        return ExecuteToolRequest.model_validate_json(raw)
    except ValidationError as exc:
        details = [
            {
                "loc": ["body", *(_printable(part) for part in error.get("loc", ()))],
                "msg": _printable(error.get("msg", "")),
                "type": error.get("type"),
            }
            for error in exc.errors(include_url=False)
        ]
        raise ApiError(422, "invalid_request", details) from None
