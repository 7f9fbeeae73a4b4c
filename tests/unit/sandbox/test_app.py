"""The sandbox HTTP service with a stand-in runner: authorization, admission, audit.

The jail itself is exercised by the runner's own tests and by the e2e and
escape suites; here the runner is a fake so each decision of the service can
be driven and observed exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.app import create_app
from sandbox.host.runner import RunnerUnavailable
from sandbox.policy.watch import PolicyStore
from sandbox.service import HARD_BODY_LIMIT, Sandbox, body_limit
from sandbox.settings import SandboxSettings
from sandbox.spec import Denial, RunResult, RunSpec

REPO = Path(__file__).resolve().parents[3]
DEFAULT_POLICY = REPO / "policies" / "sandbox.toml"


class FakeRunner:
    """Records specs and answers with a canned result; can block or fail."""

    def __init__(self) -> None:
        self.specs: list[RunSpec] = []
        self.reloads: list[str] = []
        self.missing: list[str] = []
        self.result: RunResult | None = None
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def run(self, spec: RunSpec) -> RunResult:
        self.specs.append(spec)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        if self.result is not None:
            return self.result
        return RunResult(stdout=f"ran {spec.tool}\n", stderr="", exit_code=0, duration_ms=1.5)

    def isolation_report(self) -> dict[str, Any]:
        return {"seccomp": {"active": True}, "cgroup": {"active": False, "reason": "test"}}

    def missing_layers(self, required: Iterable[str]) -> list[str]:
        return [layer for layer in required if layer in self.missing]

    async def reload(self, policy_version: str) -> None:
        self.reloads.append(policy_version)


class Service:
    """A running app (lifespan entered) with its client, runner and files."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        runner: FakeRunner,
        settings: SandboxSettings,
        store: PolicyStore,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.client = client
        self.runner = runner
        self.settings = settings
        self.store = store
        self.sandbox = sandbox

    @property
    def policy_path(self) -> Path:
        return self.settings.pagi_sandbox_policy

    def all_audit_records(self) -> list[dict[str, Any]]:
        path = self.settings.audit_log_path
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def audit_records(self) -> list[dict[str, Any]]:
        """The records of execute_tool requests (not service or policy events)."""
        return [r for r in self.all_audit_records() if r["kind"] == "execute_tool"]

    async def execute(self, token: str | None, **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post("/api/v1/execute_tool", json=body, headers=headers)


@pytest.fixture
def make_service(tmp_path: Path, keys_dir: Path) -> Callable[..., Any]:
    """``async with make_service(policy_text=None) as svc``: the app with a fake runner."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(
        policy_text: str | None = None, runner: FakeRunner | None = None
    ) -> AsyncIterator[Service]:
        policy = tmp_path / "policy" / "sandbox.toml"
        policy.parent.mkdir(exist_ok=True)
        if policy_text is None:
            shutil.copy(DEFAULT_POLICY, policy)
        else:
            policy.write_text(policy_text)
        settings = SandboxSettings(
            _env_file=None,
            pagi_sandbox_policy=policy,
            pagi_state_dir=tmp_path / "state",
            pagi_keys_dir=keys_dir,
        )
        runner = runner or FakeRunner()
        app = create_app(settings, runner=runner)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
                sandbox = app.state.sandbox
                yield Service(client, runner, settings, sandbox.store, sandbox)
        assert runner.closed

    return start


SMALL_QUEUE_POLICY = """
[sandbox]
max_concurrent_runs = 1
queue_length = 1
queue_wait_seconds = 5
[tools.demo]
argv = ["/bin/echo", "hi"]
[callers.operator]
tools = ["*"]
"""


# --------------------------------------------------------------------------- health


async def test_health_is_open_and_reports_isolation(make_service):
    async with make_service() as svc:
        response = await svc.client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["service"] == "sandbox" and body["status"] == "ok" and body["version"]
        assert body["isolation"]["cgroup"] == {"active": False, "reason": "test"}
        assert body["audit"] == {"writable": True}
        assert svc.runner.started


# --------------------------------------------------------------------------- authentication


async def test_missing_token_is_401_and_audited(make_service):
    async with make_service() as svc:
        response = await svc.execute(None, tool_name="demo")
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert svc.runner.specs == []
        (record,) = svc.audit_records()
        assert record["decision"] == "refused" and record["status"] == 401
        assert record["caller"] is None
        assert record["request_id"] == response.headers["x-request-id"]


async def test_wrong_audience_and_garbage_tokens_are_401(make_service, token_for):
    async with make_service() as svc:
        for token in (token_for("memory"), "not-a-token", token_for("sandbox")[:-4] + "AAAA"):
            response = await svc.execute(token, tool_name="demo")
            assert response.status_code == 401, token
        assert svc.runner.specs == []


# --------------------------------------------------------------------------- authorization


async def test_operator_runs_demo_with_the_policy_argv_and_limits(make_service, token_for):
    async with make_service() as svc:
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"tool_status", "result"}
        assert body["tool_status"] == "ok"
        assert body["result"]["stdout"] == "ran demo\n"
        assert body["result"]["exit_code"] == 0
        (spec,) = svc.runner.specs
        assert spec.argv == ("/bin/echo", "hello from the PAGI sandbox")
        assert spec.files == {} and spec.stdin == b""
        assert spec.network is False
        assert "landlock" in spec.required_layers and "cgroup" not in spec.required_layers
        assert spec.policy_version == body["result"]["policy_version"]


async def test_python_code_becomes_a_file_run_by_the_base_interpreter(make_service, token_for):
    async with make_service() as svc:
        response = await svc.execute(
            token_for("sandbox", sub="agent"), tool_name="python", code="print(2+2)"
        )
        assert response.status_code == 200, response.text
        (spec,) = svc.runner.specs
        assert spec.argv[0] == svc.settings.pagi_sandbox_python
        assert ".venv" not in spec.argv[0] and "shims" not in spec.argv[0]
        assert spec.argv[1:] == ("-I", "-S", "main.py")
        assert spec.files == {"main.py": b"print(2+2)"}
        assert spec.env["LANG"] == "C.UTF-8"


@pytest.mark.parametrize(
    ("caller", "tool", "status"),
    [
        ("bff", "demo", 200),
        ("bff", "python", 403),
        ("bff", "no-such-tool", 403),  # an explicit list refuses before revealing existence
        ("agent", "python", 200),
        ("agent", "no-such-tool", 403),
        ("memory", "demo", 403),  # a caller the policy does not list may run nothing
        ("gateway", "demo", 403),
        ("operator", "python", 200),
        ("operator", "no-such-tool", 404),  # "*" may run anything: unknown is 404
    ],
)
async def test_per_caller_rules_of_the_default_policy(
    make_service, token_for, caller, tool, status
):
    async with make_service() as svc:
        code = "print(1)" if tool == "python" else None
        body: dict[str, Any] = {"tool_name": tool}
        if code:
            body["code"] = code
        response = await svc.execute(token_for("sandbox", sub=caller), **body)
        assert response.status_code == status, response.text
        if status == 403:
            error = response.json()
            assert error["error"] == "forbidden"
            assert error["caller"] == caller and error["tool"] == tool
            assert caller in error["detail"] and tool in error["detail"]
            assert svc.runner.specs == []
        if status == 404:
            assert response.json()["error"] == "unknown_tool"


async def test_code_rules_400_and_413(make_service, token_for):
    async with make_service() as svc:
        operator = token_for("sandbox")
        given_to_demo = await svc.execute(operator, tool_name="demo", code="print(1)")
        assert given_to_demo.status_code == 400
        assert given_to_demo.json()["error"] == "code_not_accepted"
        missing = await svc.execute(operator, tool_name="python")
        assert missing.status_code == 400
        assert missing.json()["error"] == "code_required"
        too_large = await svc.execute(operator, tool_name="python", code="#" * (64 * 1024 + 1))
        assert too_large.status_code == 413
        assert too_large.json()["error"] == "code_too_large"
        assert too_large.json()["max_code_bytes"] == 64 * 1024
        at_limit = await svc.execute(operator, tool_name="python", code="#" * (64 * 1024))
        assert at_limit.status_code == 200
        # Counted in UTF-8 bytes, not characters.
        wide = await svc.execute(operator, tool_name="python", code="é" * (32 * 1024 + 1))
        assert wide.status_code == 413
        assert len(svc.runner.specs) == 1
        statuses = [r["status"] for r in svc.audit_records()]
        assert statuses == [400, 400, 413, 200, 413]


async def test_huge_body_is_413_audited_and_only_after_authentication(make_service, token_for):
    async with make_service() as svc:
        limit = body_limit(svc.store.current)
        body = json.dumps({"tool_name": "python", "code": "#" * limit})
        headers = {"Content-Type": "application/json", "X-Request-Id": "huge-body"}
        anonymous = await svc.client.post("/api/v1/execute_tool", content=body, headers=headers)
        assert anonymous.status_code == 401
        headers["Authorization"] = f"Bearer {token_for('sandbox')}"
        response = await svc.client.post("/api/v1/execute_tool", content=body, headers=headers)
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        # The limit follows the policy: 6 bytes per code byte (JSON escapes), the
        # largest input files in base64 with their paths, and a margin.
        files = -(-8 * 1024 * 1024 // 3) * 4 + 16 * 8 * 1024
        assert limit == 64 * 1024 * 6 + files + 16 * 1024
        assert str(limit) in response.json()["detail"]
        assert [r["status"] for r in svc.audit_records()] == [401, 413]
        assert svc.runner.specs == []


async def test_body_limit_follows_the_policy_on_reload(make_service, token_for):
    async with make_service() as svc:
        token = token_for("sandbox")
        code = "#" * (200 * 1024)
        too_large = await svc.execute(token, tool_name="python", code=code)
        assert too_large.status_code == 413
        text = svc.policy_path.read_text().replace(
            'max_code_bytes = "64 KiB"', 'max_code_bytes = "256 KiB"'
        )
        svc.policy_path.write_text(text)
        assert svc.store.refresh() is not None
        assert (await svc.execute(token, tool_name="python", code=code)).status_code == 200


async def test_bodies_beyond_the_hard_limit_are_refused_before_routing(make_service, token_for):
    async with make_service() as svc:
        response = await svc.client.post(
            "/api/v1/execute_tool",
            content=b"x" * (HARD_BODY_LIMIT + 1),
            headers={"Authorization": f"Bearer {token_for('sandbox')}"},
        )
        assert response.status_code == 413


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"tool_name": 5}',
        b'{"code": "print(1)"}',
        b'{"tool_name": "demo", "extra": 1}',
        b'{"tool_name": "demo", "\\ud800": 1}',
        b'{"tool_name": "de\\u0000mo"}',
        b'{"tool_name": ""}',
    ],
)
async def test_malformed_bodies_are_422_json(make_service, token_for, raw):
    async with make_service() as svc:
        response = await svc.client.post(
            "/api/v1/execute_tool",
            content=raw,
            headers={"Authorization": f"Bearer {token_for('sandbox')}"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
        assert svc.runner.specs == []


async def test_lone_surrogate_in_code_is_refused_as_invalid(make_service, token_for):
    async with make_service() as svc:
        response = await svc.client.post(
            "/api/v1/execute_tool",
            content=b'{"tool_name": "python", "code": "print(1) # \\ud800"}',
            headers={"Authorization": f"Bearer {token_for('sandbox')}"},
        )
        # The JSON parser refuses text that is not valid Unicode.
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"
        assert svc.runner.specs == []


# --------------------------------------------------------------------------- isolation, failures


async def test_missing_required_layer_is_503_naming_it(make_service, token_for):
    async with make_service() as svc:
        svc.runner.missing = ["landlock"]
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "isolation_unavailable"
        assert body["missing_layers"] == ["landlock"] and "landlock" in body["detail"]
        assert svc.runner.specs == []
        (record,) = svc.audit_records()
        assert (record["decision"], record["status"]) == ("refused", 503)
        # cgroup is optional in the default policy: its absence does not block runs.
        svc.runner.missing = ["cgroup"]
        assert (await svc.execute(token_for("sandbox"), tool_name="demo")).status_code == 200


async def test_runner_failures_are_503_and_audited_as_failed(make_service, token_for):
    async with make_service() as svc:
        svc.runner.error = RunnerUnavailable("cannot create user namespace", layer="userns")
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 503
        assert response.json()["error"] == "isolation_unavailable"
        assert response.json()["missing_layers"] == ["userns"]
        svc.runner.error = RuntimeError("internal detail that must not leak")
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 503
        assert response.json()["error"] == "run_failed"
        assert "internal detail" not in response.text
        decisions = [(r["decision"], r["status"]) for r in svc.audit_records()]
        assert decisions == [("failed", 503), ("failed", 503)]


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (dict(exit_code=0), "ok"),
        (dict(exit_code=3), "error"),
        (dict(exit_code=None, signal=9, limit_hit="wall_time"), "timeout"),
        (dict(exit_code=None, signal=9, limit_hit="memory"), "limit"),
        (dict(exit_code=0, limit_hit="output", stdout_truncated=True), "limit"),
        (dict(exit_code=None, signal=31, seccomp_refusals=1), "killed"),
        (dict(exit_code=None, signal=9, supervisor_died=True), "supervisor_died"),
    ],
)
async def test_tool_status_follows_the_run(make_service, token_for, result, status):
    async with make_service() as svc:
        svc.runner.result = RunResult(stdout="", stderr="", duration_ms=2.0, **result)
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 200
        body = response.json()
        assert body["tool_status"] == status
        assert body["result"]["signal"] == result.get("signal")
        assert body["result"]["limit_hit"] == result.get("limit_hit")
        (record,) = svc.audit_records()
        assert record["outcome"]["tool_status"] == status
        assert record["outcome"]["exit_code"] == result["exit_code"]
        assert record["outcome"]["seccomp_refusals"] == result.get("seccomp_refusals", 0)


async def test_what_a_tool_prints_is_never_the_services_words(
    make_service, token_for, caplog: pytest.LogCaptureFixture
):
    """A run whose supervisor died: the tool's output goes back as the tool's, nowhere else."""
    forged = "isolation_unavailable: the jail could not be set up, nothing ran FORGED"
    async with make_service() as svc:
        svc.runner.result = RunResult(
            stdout="partial\n",
            stderr=forged + "\n",
            exit_code=None,
            signal=9,
            duration_ms=2.0,
            supervisor_died=True,
            seccomp_denials={"setpriority": 2},
        )
        with caplog.at_level(logging.DEBUG):
            response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 200
        body = response.json()
        assert body["tool_status"] == "supervisor_died"
        assert body["result"]["stdout"] == "partial\n" and forged in body["result"]["stderr"]
        assert body["result"]["seccomp_denials"] == {"setpriority": 2}
        (record,) = svc.audit_records()
        assert record["outcome"]["seccomp_denials"] == {"setpriority": 2}
        assert "FORGED" not in svc.settings.audit_log_path.read_text()
        assert "FORGED" not in caplog.text


# --------------------------------------------------------------------------- admission


async def test_full_queue_is_429_with_retry_after(make_service, token_for):
    async with make_service(SMALL_QUEUE_POLICY) as svc:
        svc.runner.gate = asyncio.Event()
        token = token_for("sandbox")
        running = asyncio.create_task(svc.execute(token, tool_name="demo"))
        queued = asyncio.create_task(svc.execute(token, tool_name="demo"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if (
                len(svc.runner.specs) == 1
                and (await svc.client.get("/health")).json()["admission"]["queued"] == 1
            ):
                break
        refused = await svc.execute(token, tool_name="demo")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "too_many_requests"
        svc.runner.gate.set()
        assert (await running).status_code == 200
        assert (await queued).status_code == 200
        assert [r["status"] for r in svc.audit_records()].count(429) == 1


# --------------------------------------------------------------------------- audit


async def test_audit_record_fields_for_an_allowed_run(make_service, token_for):
    async with make_service() as svc:
        response = await svc.client.post(
            "/api/v1/execute_tool",
            json={"tool_name": "python", "code": "print(2+2)"},
            headers={
                "Authorization": f"Bearer {token_for('sandbox', sub='agent')}",
                "X-Request-Id": "audit-check-1",
            },
        )
        assert response.status_code == 200
        (record,) = svc.audit_records()
        assert record["request_id"] == "audit-check-1"
        assert record["caller"] == "agent" and record["tool"] == "python"
        assert record["code_bytes"] == 10
        assert record["code_sha256"] == hashlib.sha256(b"print(2+2)").hexdigest()
        assert record["policy_version"] == response.json()["result"]["policy_version"]
        assert record["decision"] == "allowed" and record["status"] == 200
        assert record["outcome"]["tool_status"] == "ok"
        assert record["duration_ms"] >= 0 and record["time"].endswith("Z")
        assert "print(2+2)" not in svc.settings.audit_log_path.read_text()
        assert oct(svc.settings.audit_log_path.stat().st_mode & 0o777) == "0o600"


async def test_unwritable_audit_file_refuses_runs_then_recovers(make_service, token_for):
    async with make_service() as svc:
        token = token_for("sandbox")
        assert (await svc.execute(token, tool_name="demo")).status_code == 200
        audit_path = svc.settings.audit_log_path
        saved = audit_path.read_text()
        audit_path.unlink()
        audit_path.mkdir()  # the path can no longer be opened as a file
        response = await svc.execute(token, tool_name="demo")
        assert response.status_code == 503
        assert response.json()["error"] == "audit_unavailable"
        assert len(svc.runner.specs) == 1
        health = (await svc.client.get("/health")).json()
        assert health["audit"] == {"writable": False}
        audit_path.rmdir()
        assert (await svc.execute(token, tool_name="demo")).status_code == 200
        assert len(svc.runner.specs) == 2
        assert saved  # the first record was written before the breakage
        (record,) = svc.audit_records()  # the new file holds the run after recovery
        assert record["decision"] == "allowed"


async def test_rotated_audit_file_is_reopened(make_service, token_for):
    async with make_service() as svc:
        token = token_for("sandbox")
        await svc.execute(token, tool_name="demo")
        audit_path = svc.settings.audit_log_path
        audit_path.rename(audit_path.with_suffix(".1"))
        await svc.execute(token, tool_name="demo")
        assert len(svc.audit_records()) == 1
        rotated = [
            json.loads(line) for line in audit_path.with_suffix(".1").read_text().splitlines()
        ]
        assert [r["kind"] for r in rotated] == ["service", "execute_tool"]


# --------------------------------------------------------------------------- policy status


async def test_policy_status_needs_a_token_and_describes_the_policy(make_service, token_for):
    async with make_service() as svc:
        assert (await svc.client.get("/api/v1/policy")).status_code == 401
        response = await svc.client.get(
            "/api/v1/policy", headers={"Authorization": f"Bearer {token_for('sandbox', sub='bff')}"}
        )
        assert response.status_code == 200
        body = response.json()
        assert len(body["version"]) == 16
        assert body["source"] == str(svc.policy_path)
        assert body["last_error"] is None
        assert body["caller"] == "bff" and body["caller_tools"] == ["demo"]
        assert body["summary"]["callers"]["operator"] == ["*"]
        assert body["summary"]["tools"]["python"]["limits"]["wall_seconds"] == 5.0


async def test_a_run_finishes_under_the_policy_it_was_admitted_with(make_service, token_for):
    async with make_service() as svc:
        svc.runner.gate = asyncio.Event()
        agent = token_for("sandbox", sub="agent")
        in_flight = asyncio.create_task(svc.execute(agent, tool_name="python", code="print(1)"))
        while not svc.runner.specs:
            await asyncio.sleep(0.01)
        old_version = svc.runner.specs[0].policy_version
        text = svc.policy_path.read_text().replace(
            'tools = ["demo", "python", "python-data"]', 'tools = ["demo"]'
        )
        svc.policy_path.write_text(text)
        new = svc.store.refresh()
        assert new is not None and new.version != old_version
        revoked = await svc.execute(agent, tool_name="python", code="print(1)")
        assert revoked.status_code == 403
        svc.runner.gate.set()
        finished = await in_flight
        assert finished.status_code == 200
        assert finished.json()["result"]["policy_version"] == old_version


CODE_MODES_POLICY = """
[sandbox]
dangerously_allow_host_network = true

[tools.cat]
argv = ["/bin/cat"]
code = "stdin"
max_code_bytes = 100

[tools.sh]
argv = ["/bin/sh", "-c"]
code = "argv"
network = true
readable_paths = ["/usr/share/zoneinfo"]
denied_syscalls = ["ptrace", "sendfile"]
env = { TZ = "UTC" }
limits = { wall_seconds = 1.5, output_bytes = "4 KiB" }

[callers.operator]
tools = ["*"]
"""


async def test_stdin_and_argv_code_modes_reach_the_run_spec(make_service, token_for):
    async with make_service(CODE_MODES_POLICY) as svc:
        token = token_for("sandbox")
        assert (await svc.execute(token, tool_name="cat", code="héllo")).status_code == 200
        assert (await svc.execute(token, tool_name="sh", code="echo hi")).status_code == 200
        cat, sh = svc.runner.specs
        assert cat.argv == ("/bin/cat",) and cat.stdin == "héllo".encode() and cat.files == {}
        assert sh.argv == ("/bin/sh", "-c", "echo hi") and sh.stdin == b""
        assert sh.network is True
        assert sh.readable_paths == ("/usr/share/zoneinfo",)
        assert sh.denied_syscalls == ("ptrace", "sendfile")
        assert sh.env == {"TZ": "UTC"}
        assert sh.limits.wall_seconds == 1.5 and sh.limits.output_bytes == 4096
        assert sh.limits.cpu_seconds == 5  # from the built-in defaults
        nul = await svc.execute(token, tool_name="sh", code="echo\x00hi")
        assert nul.status_code == 400 and nul.json()["error"] == "invalid_code"
        over = await svc.execute(token, tool_name="cat", code="x" * 101)
        assert over.status_code == 413


async def test_service_start_stop_and_policy_changes_are_audited(make_service):
    async with make_service() as svc:
        start = svc.all_audit_records()[0]
        assert (start["kind"], start["action"]) == ("service", "sandbox_started")
        assert start["policy_version"] == svc.store.current.version
        good = svc.policy_path.read_text()
        svc.policy_path.write_text(good.replace("open_files = 64", "open_files = -1"))
        assert svc.store.refresh() is None
        svc.policy_path.write_text(good + "\n# reviewed\n")
        new = svc.store.refresh()
        assert new is not None
        settings = svc.settings
    records = [json.loads(line) for line in settings.audit_log_path.read_text().splitlines()]
    policy = [r for r in records if r["kind"] == "policy"]
    assert [r["action"] for r in policy] == ["policy_rejected", "policy_reloaded"]
    assert "defaults.open_files" in policy[0]["error"]
    assert policy[0]["kept_version"] == start["policy_version"]
    assert policy[1]["version"] == new.version
    assert policy[1]["previous_version"] == start["policy_version"]
    assert records[-1]["action"] == "sandbox_stopped"


# --------------------------------------------------------------------------- network


EGRESS_POLICY = """
[tools.fetch]
argv = ["/bin/true"]

[tools.fetch.network]
allow = ["api.example.org:443", "*.pypi.org"]
deny = ["upload.pypi.org"]

[callers.operator]
tools = ["*"]
"""


async def test_a_tool_with_an_egress_table_is_refused_not_run_without_the_proxy(
    make_service, token_for
):
    async with make_service(EGRESS_POLICY) as svc:
        response = await svc.execute(token_for("sandbox"), tool_name="fetch")
        assert response.status_code == 503
        assert response.json()["error"] == "egress_unavailable"
        assert svc.runner.specs == []
        [record] = svc.audit_records()
        assert record["decision"] == "refused" and record["status"] == 503


async def test_policy_status_health_and_tools_show_the_network_choice(make_service, token_for):
    async with make_service(EGRESS_POLICY) as svc:
        token = token_for("sandbox")
        status = (await svc.client.get("/api/v1/policy", headers=bearer(token))).json()
        fetch = status["summary"]["tools"]["fetch"]
        assert fetch["network"] is True and fetch["host_network"] is False
        assert fetch["egress"]["allow"] == ["api.example.org:443", "*.pypi.org"]
        assert fetch["egress"]["deny"] == ["upload.pypi.org"]
        assert fetch["egress"]["max_connections"] == 16
        health = (await svc.client.get("/health")).json()
        assert health["policy"]["dangerously_allow_host_network"] is False
        assert health["policy"]["host_network_tools"] == 0
        tools = (await svc.client.get("/api/v1/tools", headers=bearer(token))).json()["tools"]
        assert tools[0]["network"] is True
        assert tools[0]["egress_allow"] == ["api.example.org:443", "*.pypi.org"]

        # A hot edit: the opt-in for the host's whole network shows in /health,
        # and the egress rules of the new version are what the snapshot hands out.
        svc.policy_path.write_text(
            "[sandbox]\ndangerously_allow_host_network = true\n"
            + EGRESS_POLICY.replace('"*.pypi.org"', '"files.pythonhosted.org:443"')
            + '[tools.legacy]\nargv = ["/bin/true"]\nnetwork = true\n'
        )
        snapshot = svc.store.refresh()
        assert snapshot is not None
        health = (await svc.client.get("/health")).json()
        assert health["policy"]["dangerously_allow_host_network"] is True
        assert health["policy"]["host_network_tools"] == 1
        rules = snapshot.egress_of("fetch").rules
        assert [rule.text for rule in rules.allow] == [
            "api.example.org:443",
            "files.pythonhosted.org:443",
        ]
        assert snapshot.egress_of("legacy") is None


async def test_network_true_without_the_opt_in_is_refused_on_reload(make_service):
    async with make_service(EGRESS_POLICY) as svc:
        before = svc.store.current.version
        svc.policy_path.write_text(
            EGRESS_POLICY + '[tools.legacy]\nargv = ["/bin/true"]\nnetwork = true\n'
        )
        assert svc.store.refresh() is None
        assert svc.store.current.version == before
        assert "dangerously_allow_host_network" in svc.store.last_error
        assert "tools.legacy.network" in svc.store.last_error


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_runs_denials_reach_its_result_audit_record_and_metrics(make_service, token_for):
    denial = Denial(
        layer="seccomp",
        what="socket(AF_INET, SOCK_STREAM)",
        count=2,
        hint="this tool has no network (tools.demo.network)",
    )
    limit = Denial(layer="limit", what="wall_seconds = 5 s", count=1, hint="h")
    async with make_service() as svc:
        svc.runner.result = RunResult(
            stdout="",
            stderr="",
            exit_code=None,
            signal=9,
            limit_hit="wall_time",
            duration_ms=2.0,
            seccomp_refusals=2,
            seccomp_denials={"socket": 2},
            denials=[denial, limit],
        )
        response = await svc.execute(token_for("sandbox"), tool_name="demo")
        assert response.status_code == 200
        expected = [denial.model_dump(), limit.model_dump()]
        assert response.json()["result"]["denials"] == expected
        (record,) = svc.audit_records()
        assert record["outcome"]["denials"] == expected
        metrics = (await svc.client.get("/metrics")).text
        assert 'pagi_sandbox_denials_total{layer="limit"} 1.0' in metrics


async def test_the_policy_status_shows_each_tools_denial_settings(make_service, token_for):
    async with make_service() as svc:
        response = await svc.client.get(
            "/api/v1/policy", headers={"Authorization": f"Bearer {token_for('sandbox')}"}
        )
        python = response.json()["summary"]["tools"]["python"]
        assert (python["explain_denials"], python["allow_exec_written"]) == (True, False)
