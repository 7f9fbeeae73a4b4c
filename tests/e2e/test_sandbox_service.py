"""The sandbox as a real process with the real jail: tools, callers, audit, hot reload.

One sandbox serves the whole module, on a private copy of the default
policy that the tests edit as an operator would (each edit is waited for
through ``GET /api/v1/policy`` and the default is restored afterwards).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pagi.stack import Stack
from sandbox.policy import parse_policy
from sandbox.service import body_limit
from testing.stack import REPO, LogCollector, launch_stack, stack_env

pytestmark = pytest.mark.e2e

DEFAULT_POLICY = (REPO / "policies" / "sandbox.toml").read_text()
RELOAD_DEADLINE_SECONDS = 1.0


class Sandbox:
    """A running sandbox process, its policy file and its audit log."""

    def __init__(self, stack: Stack, policy: Path, audit: Path) -> None:
        self.stack = stack
        self.url = stack.settings.url_of("sandbox")
        self.policy = policy
        self.audit = audit

    def execute(
        self, token: str | None, request_id: str | None = None, **body: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if request_id:
            headers["X-Request-Id"] = request_id
        return httpx.post(f"{self.url}/api/v1/execute_tool", json=body, headers=headers, timeout=30)

    def policy_status(self, token: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/v1/policy", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert response.status_code == 200, response.text
        return response.json()

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def audit_of(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [r for r in self.audit_records() if r.get("request_id") == request_id]
            if found:
                assert len(found) == 1, found
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no audit record for {request_id}")


def write_policy(path: Path, text: str) -> str:
    """Replace the file as an editor does; return the version it will have."""
    tmp = path.with_name(f".{path.name}.swp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("sandbox-e2e")
    policy = root / "policies" / "sandbox.toml"
    policy.parent.mkdir()
    policy.write_text(DEFAULT_POLICY)
    audit = root / "audit" / "sandbox-audit.jsonl"
    env = stack_env(
        root / "state", keys_dir, PAGI_SANDBOX_POLICY=str(policy), PAGI_SANDBOX_AUDIT_LOG=str(audit)
    )
    stack = launch_stack(env, ["sandbox"])
    yield Sandbox(stack, policy, audit)
    stack.stop()


@pytest.fixture
def operator(token_for: Callable[..., str]) -> str:
    return token_for("sandbox")


@pytest.fixture
def edit_policy(sandbox: Sandbox, operator: str) -> Iterator[Callable[[str], float]]:
    """``edit_policy(text)``: write it, wait until it is live, return the seconds it took."""

    def edit(text: str) -> float:
        version = write_policy(sandbox.policy, text)
        started = time.monotonic()
        while sandbox.policy_status(operator)["version"] != version:
            if time.monotonic() - started > 5:
                raise AssertionError("the edit never went live")
            time.sleep(0.02)
        return time.monotonic() - started

    yield edit
    if not sandbox.policy.is_file() or sandbox.policy.read_text() != DEFAULT_POLICY:
        edit(DEFAULT_POLICY)


# --------------------------------------------------------------------------- tools


def test_health_reports_isolation(sandbox: Sandbox) -> None:
    body = httpx.get(f"{sandbox.url}/health", timeout=5).json()
    assert body["service"] == "sandbox" and body["status"] == "ok"
    isolation = body["isolation"]
    for layer in ("userns", "pidns", "netns", "mountns", "landlock", "seccomp", "rlimits"):
        assert isolation[layer]["active"] is True, (layer, isolation[layer])


def test_demo_tool(sandbox: Sandbox, operator: str) -> None:
    response = sandbox.execute(operator, tool_name="demo")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool_status"] == "ok"
    assert body["result"]["stdout"] == "hello from the PAGI sandbox\n"
    assert body["result"]["exit_code"] == 0


def test_python_prints_four(sandbox: Sandbox, operator: str) -> None:
    response = sandbox.execute(operator, tool_name="python", code="print(2+2)")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tool_status"] == "ok"
    assert body["result"]["stdout"] == "4\n"
    assert body["result"]["stderr"] == ""


def test_a_csv_in_comes_back_as_a_file_out_and_the_audit_names_both(
    sandbox: Sandbox, operator: str
) -> None:
    code = (
        "import csv, os\n"
        "rows = list(csv.reader(open('data/sales.csv')))\n"
        "os.makedirs('out/charts')\n"
        "open('out/charts/total.txt', 'w').write(str(sum(int(r[1]) for r in rows[1:])))\n"
        "os.symlink('/etc/passwd', 'out/passwd')\n"
    )
    csv_data = b"region,amount\nnorth,10\nsouth,5\n"
    response = sandbox.execute(
        operator,
        tool_name="python",
        code=code,
        files=[{"path": "data/sales.csv", "content": base64.b64encode(csv_data).decode()}],
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["exit_code"] == 0, result
    assert [(f["path"], f["content"], f["skipped"]) for f in result["files"]] == [
        ("out/charts/total.txt", base64.b64encode(b"15").decode(), None),
        ("out/passwd", None, "symlink"),
    ]
    record = [
        r for r in map(json.loads, sandbox.audit.read_text().splitlines()) if r.get("files_in")
    ][-1]
    assert record["files_in"]["files"] == [
        {
            "path": "data/sales.csv",
            "size": len(csv_data),
            "sha256": hashlib.sha256(csv_data).hexdigest(),
        }
    ]
    assert record["files_out"]["returned"] == 1 and record["files_out"]["count"] == 2


def test_python_failure_and_timeout(sandbox: Sandbox, operator: str) -> None:
    failed = sandbox.execute(operator, tool_name="python", code="import sys; sys.exit(3)").json()
    assert failed["tool_status"] == "error" and failed["result"]["exit_code"] == 3
    raised = sandbox.execute(operator, tool_name="python", code="1/0").json()
    assert raised["tool_status"] == "error" and "ZeroDivisionError" in raised["result"]["stderr"]
    slow = sandbox.execute(operator, tool_name="python", code="while True: pass").json()
    assert slow["tool_status"] in ("timeout", "limit")
    assert slow["result"]["limit_hit"] in ("wall_time", "cpu_time")


# --------------------------------------------------------------------------- authorization


def test_missing_and_forged_tokens_are_401(sandbox: Sandbox, operator: str) -> None:
    assert sandbox.execute(None, tool_name="demo").status_code == 401
    header, payload, signature = operator.split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    assert sandbox.execute(tampered, tool_name="demo").status_code == 401
    assert sandbox.execute("a.b.c", tool_name="demo").status_code == 401


@pytest.mark.parametrize(
    ("caller", "tool", "status"),
    [
        ("bff", "demo", 200),
        ("bff", "python", 403),
        ("agent", "python", 200),
        ("memory", "demo", 403),
        ("operator", "nonexistent", 404),
    ],
)
def test_per_caller_rules_with_real_tokens(
    sandbox: Sandbox, token_for: Callable[..., str], caller: str, tool: str, status: int
) -> None:
    body: dict[str, Any] = {"tool_name": tool}
    if tool == "python":
        body["code"] = "print('hi')"
    response = sandbox.execute(token_for("sandbox", sub=caller), **body)
    assert response.status_code == status, response.text
    if status == 403:
        error = response.json()
        assert error["caller"] == caller and error["tool"] == tool


def test_huge_code_is_413(sandbox: Sandbox, operator: str) -> None:
    over = sandbox.execute(operator, tool_name="python", code="#" * (64 * 1024 + 1))
    assert over.status_code == 413 and over.json()["error"] == "code_too_large"
    # Beyond what any tool of the policy may send (code and input files): not even read.
    limit = body_limit(parse_policy(DEFAULT_POLICY.encode(), sandbox.policy))
    huge = sandbox.execute(operator, tool_name="python", code="#" * limit)
    assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"


# --------------------------------------------------------------------------- audit


def test_audit_records_allowed_and_refused(
    sandbox: Sandbox, operator: str, token_for: Callable[..., str]
) -> None:
    sandbox.execute(operator, request_id="e2e-allowed", tool_name="python", code="print(1)")
    sandbox.execute(
        token_for("sandbox", sub="bff"),
        request_id="e2e-refused",
        tool_name="python",
        code="print(1)",
    )
    sandbox.execute(None, request_id="e2e-anonymous", tool_name="demo")
    sandbox.execute(
        operator, request_id="e2e-crashed", tool_name="python", code="import os; os.abort()"
    )

    allowed = sandbox.audit_of("e2e-allowed")
    assert allowed["decision"] == "allowed" and allowed["caller"] == "operator"
    assert allowed["code_sha256"] == hashlib.sha256(b"print(1)").hexdigest()
    assert allowed["code_bytes"] == 8 and allowed["policy_version"]
    assert allowed["outcome"]["tool_status"] == "ok" and allowed["outcome"]["exit_code"] == 0
    refused = sandbox.audit_of("e2e-refused")
    assert (refused["decision"], refused["status"], refused["caller"]) == ("refused", 403, "bff")
    assert refused["outcome"] is None
    anonymous = sandbox.audit_of("e2e-anonymous")
    assert (anonymous["decision"], anonymous["status"]) == ("refused", 401)
    crashed = sandbox.audit_of("e2e-crashed")
    assert crashed["decision"] == "allowed"
    assert crashed["outcome"]["tool_status"] == "killed" and crashed["outcome"]["signal"] == 6
    assert any(
        '"event": "audit"' in line and "e2e-allowed" in line
        for line in sandbox.stack.logs.of("sandbox")  # type: ignore[attr-defined]
    )


# --------------------------------------------------------------------------- hot reload


def test_added_tool_works_within_a_second(
    sandbox: Sandbox, operator: str, edit_policy: Callable[[str], float]
) -> None:
    assert sandbox.execute(operator, tool_name="date").status_code == 404
    added = DEFAULT_POLICY + '\n[tools.date]\nargv = ["/bin/echo", "new tool"]\n'
    took = edit_policy(added)
    assert took < RELOAD_DEADLINE_SECONDS
    response = sandbox.execute(operator, tool_name="date")
    assert response.status_code == 200 and response.json()["result"]["stdout"] == "new tool\n"


def test_revoked_right_applies_to_the_next_request(
    sandbox: Sandbox, token_for: Callable[..., str], edit_policy: Callable[[str], float]
) -> None:
    agent = token_for("sandbox", sub="agent")
    allowed = sandbox.execute(agent, tool_name="python", code="print(1)")
    assert allowed.status_code == 200, allowed.text
    edit_policy(
        DEFAULT_POLICY.replace('tools = ["demo", "python", "python-data"]', 'tools = ["demo"]')
    )
    assert sandbox.execute(agent, tool_name="python", code="print(1)").status_code == 403


def test_broken_then_fixed_then_deleted_policy(
    sandbox: Sandbox, operator: str, edit_policy: Callable[[str], float]
) -> None:
    good = sandbox.policy_status(operator)["version"]
    # A typo in a key and a negative limit: last good keeps serving.
    broken = DEFAULT_POLICY.replace("[defaults]\n", "[defaults]\nwall_secs = 3\n").replace(
        "open_files = 64", "open_files = -64"
    )
    write_policy(sandbox.policy, broken)
    deadline = time.monotonic() + 5
    while (status := sandbox.policy_status(operator))["last_error"] is None:
        assert time.monotonic() < deadline, "the broken edit was never noticed"
        time.sleep(0.02)
    assert status["version"] == good
    assert "defaults.wall_secs" in status["last_error"]
    assert "defaults.open_files" in status["last_error"]
    assert str(sandbox.policy) in status["last_error"]
    assert (
        sandbox.execute(operator, tool_name="python", code="print(2+2)").json()["result"]["stdout"]
        == "4\n"
    )
    # Fixed (back to the version in force): the error clears.
    write_policy(sandbox.policy, DEFAULT_POLICY)
    deadline = time.monotonic() + RELOAD_DEADLINE_SECONDS
    while (status := sandbox.policy_status(operator))["last_error"] is not None:
        assert time.monotonic() < deadline, "the fix was not noticed within a second"
        time.sleep(0.02)
    assert status["version"] == good
    # Deleted: last good still serves, the error says so.
    sandbox.policy.unlink()
    deadline = time.monotonic() + 5
    while (status := sandbox.policy_status(operator))["last_error"] is None:
        assert time.monotonic() < deadline, "the deletion was never noticed"
        time.sleep(0.02)
    assert "file not found" in status["last_error"]
    still = sandbox.execute(operator, tool_name="demo")
    assert still.status_code == 200, still.text
    edit_policy(DEFAULT_POLICY)
    # The audit file tells the story of the edits.
    actions = [
        (r["action"], r.get("kept_version") or r.get("version"))
        for r in sandbox.audit_records()
        if r["kind"] == "policy"
    ]
    assert ("policy_rejected", good) in actions
    rejections = [r for r in sandbox.audit_records() if r.get("action") == "policy_rejected"]
    assert any("defaults.wall_secs" in r["error"] for r in rejections)
    assert any("file not found" in r["error"] for r in rejections)


# --------------------------------------------------------------------------- admission


def test_saturated_queue_is_429_with_retry_after(
    sandbox: Sandbox, operator: str, edit_policy: Callable[[str], float]
) -> None:
    edit_policy(
        re.sub(
            r"(?m)^queue_length = \d+$",
            "queue_length = 1",
            re.sub(r"(?m)^max_concurrent_runs = \d+$", "max_concurrent_runs = 1", DEFAULT_POLICY),
        )
    )
    code = "import time; time.sleep(1.5); print('done')"
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(sandbox.execute, operator, tool_name="python", code=code) for _ in range(4)
        ]
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"] == "too_many_requests"
    assert all(r.json()["result"]["stdout"] == "done\n" for r in responses if r.status_code == 200)


def test_required_layer_missing_is_503_naming_it(
    sandbox: Sandbox, operator: str, edit_policy: Callable[[str], float]
) -> None:
    """Requiring every layer: 503 naming the missing one, or a run when all are present."""
    isolation = httpx.get(f"{sandbox.url}/health", timeout=5).json()["isolation"]
    edit_policy(DEFAULT_POLICY.replace('"landlock", "seccomp"', '"landlock", "cgroup", "seccomp"'))
    response = sandbox.execute(operator, tool_name="demo")
    if isolation["cgroup"]["active"]:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 503
        assert response.json()["missing_layers"] == ["cgroup"]


def start_expecting_refusal(env: dict[str, str]) -> str:
    """Start a sandbox that must refuse to start (exit 2); its output."""
    logs = LogCollector()
    stack = Stack(env=env, services=["sandbox"], cwd=REPO, sink=logs)
    entry = stack.start_service("sandbox")
    try:
        assert entry.process.wait(timeout=30) == 2
    finally:
        stack.stop()
    return "\n".join(logs.of("sandbox"))


def test_invalid_policy_at_start_refuses_to_start(tmp_path: Path, keys_dir: Path) -> None:
    policy = tmp_path / "sandbox.toml"
    policy.write_text(DEFAULT_POLICY.replace("processes = 16", "processes = 100000"))
    env = stack_env(tmp_path / "state", keys_dir, PAGI_SANDBOX_POLICY=str(policy))
    output = start_expecting_refusal(env)
    assert "refusing to start" in output and "defaults.processes" in output
    assert f"{policy}:" in output


def test_missing_policy_at_start_refuses_to_start(tmp_path: Path, keys_dir: Path) -> None:
    env = stack_env(tmp_path / "state", keys_dir, PAGI_SANDBOX_POLICY=str(tmp_path / "none.toml"))
    assert "file not found" in start_expecting_refusal(env)


def test_unwritable_audit_file_at_start_refuses_to_start(tmp_path: Path, keys_dir: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.mkdir()  # a directory where the file should be
    env = stack_env(tmp_path / "state", keys_dir, PAGI_SANDBOX_AUDIT_LOG=str(audit))
    output = start_expecting_refusal(env)
    assert "refusing to start" in output and str(audit) in output
