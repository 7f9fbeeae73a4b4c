"""The sandbox's HTTP edge: people the bff acts for, the audit tail, and what it counts.

The runner is a stand-in: these tests are about who may do what and what
``/metrics`` says, not about the jail.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagi.auth import TokenSigner
from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from sandbox.spec import RunResult, RunSpec

REPO = Path(__file__).resolve().parents[3]
DEFAULT_POLICY = REPO / "policies" / "sandbox.toml"


class StandInRunner:
    """Answers every run with ``result``; reports a warm path it is told about."""

    def __init__(self) -> None:
        self.result = RunResult(stdout="hi\n", stderr="", exit_code=0, duration_ms=2.0)
        self.warm = {"state": "ready", "zygotes_ready": 4, "restarts": 0}
        self.gate: asyncio.Event | None = None

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def reload(self, policy_version: str) -> None: ...

    async def run(self, spec: RunSpec) -> RunResult:
        if self.gate is not None:
            await self.gate.wait()
        return self.result

    def isolation_report(self) -> dict[str, Any]:
        return {
            "seccomp": {"active": True},
            "cgroup": {"active": False, "reason": "test"},
            "warm_path": dict(self.warm),
        }

    def missing_layers(self, required: Iterable[str]) -> list[str]:
        return []


class Sandbox:
    def __init__(self, client: httpx.AsyncClient, runner: StandInRunner, policy: Path) -> None:
        self.client = client
        self.runner = runner
        self.policy = policy

    async def execute(self, token: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/api/v1/execute_tool", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` in one step, so the policy watcher never reads half an edit."""
    draft = path.with_name(f".{path.name}.draft")
    draft.write_text(text)
    draft.replace(path)


@pytest.fixture
def sandbox(tmp_path: Path, keys_dir: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[Sandbox]:
        policy = tmp_path / "policy" / "sandbox.toml"
        policy.parent.mkdir(exist_ok=True)
        shutil.copy(DEFAULT_POLICY, policy)
        runner = StandInRunner()
        app = create_app(
            SandboxSettings(
                _env_file=None,
                pagi_sandbox_policy=policy,
                pagi_state_dir=tmp_path / "state",
                pagi_keys_dir=keys_dir,
                **settings,
            ),
            runner=runner,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
                yield Sandbox(client, runner, policy)

    return start


@pytest.fixture
def as_person(keys_dir: Path) -> Callable[[str], str]:
    """``as_person(name)``: the bff's token acting for ``name``."""
    bff = TokenSigner.from_keys_dir(keys_dir, "bff")
    return lambda name: bff.sign("sandbox", subject=name)


# --------------------------------------------------------------------------- people


async def test_the_bff_acting_for_the_operator_runs_what_the_operator_may(
    sandbox, as_person, token_for
):
    async with sandbox() as svc:
        alone = await svc.execute(token_for("sandbox", sub="bff"), tool_name="python", code="1")
        assert alone.status_code == 403  # the bff's own entry allows the demo tool only
        for_operator = await svc.execute(as_person("operator"), tool_name="python", code="1")
        assert for_operator.status_code == 200, for_operator.text
        audit = await svc.client.get(
            "/api/v1/audit", headers={"Authorization": f"Bearer {token_for('sandbox')}"}
        )
    runs = [r for r in audit.json()["records"] if r.get("kind") == "execute_tool"]
    assert [(r["caller"], r["actor"], r["status"]) for r in runs] == [
        ("bff", None, 403),
        ("operator", "bff", 200),
    ]


async def test_a_person_gets_no_more_than_their_own_entry(sandbox, as_person, token_for):
    async with sandbox() as svc:
        refused = await svc.execute(as_person("alice"), tool_name="demo")
        tools = await svc.client.get(
            "/api/v1/tools", headers={"Authorization": f"Bearer {as_person('alice')}"}
        )
        policy = await svc.client.get(
            "/api/v1/policy", headers={"Authorization": f"Bearer {as_person('alice')}"}
        )
    # The bff itself may run demo; alice, whom the policy does not name, may not.
    assert refused.status_code == 403
    assert refused.json()["detail"] == "caller 'alice' may not run tool 'demo'"
    assert tools.json()["caller"] == "alice" and tools.json()["tools"] == []
    assert policy.json()["caller"] == "alice" and policy.json()["caller_tools"] == []


async def test_only_the_bff_may_act_for_people(sandbox, keys_dir):
    agent = TokenSigner.from_keys_dir(keys_dir, "agent")
    async with sandbox() as svc:
        answer = await svc.execute(agent.sign("sandbox", subject="operator"), tool_name="demo")
    assert answer.status_code == 401
    assert answer.json()["detail"] == "agent may not act for others here"


# --------------------------------------------------------------------------- audit tail


async def test_the_audit_tail_is_for_operators_only(sandbox, as_person, token_for):
    async with sandbox() as svc:
        await svc.execute(token_for("sandbox"), tool_name="demo")

        async def tail(token: str, **params: Any) -> httpx.Response:
            return await svc.client.get(
                "/api/v1/audit", params=params, headers={"Authorization": f"Bearer {token}"}
            )

        operator = await tail(token_for("sandbox"), limit=2)
        for_operator = await tail(as_person("operator"))
        for_alice = await tail(as_person("alice"))
        bff_alone = await tail(token_for("sandbox", sub="bff"))
        agent = await tail(token_for("sandbox", sub="agent"))
        too_many = await tail(token_for("sandbox"), limit=501)
        anonymous = await svc.client.get("/api/v1/audit")
    assert operator.status_code == 200
    body = operator.json()
    assert body["count"] == 2
    assert body["records"][-1]["kind"] == "execute_tool"
    assert body["records"][-1]["tool"] == "demo"
    assert for_operator.status_code == 200
    assert for_alice.status_code == bff_alone.status_code == agent.status_code == 403
    assert too_many.status_code == 422
    assert anonymous.status_code == 401


async def test_more_operators_can_be_named(sandbox, as_person):
    async with sandbox(pagi_operators="operator,alice") as svc:
        answer = await svc.client.get(
            "/api/v1/audit", headers={"Authorization": f"Bearer {as_person('alice')}"}
        )
    assert answer.status_code == 200


# --------------------------------------------------------------------------- metrics


async def test_runs_refusals_and_denials_are_counted(sandbox, token_for):
    operator = token_for("sandbox")
    async with sandbox() as svc:
        runs_before = await svc.metric("pagi_sandbox_tool_runs_total", tool="demo", outcome="ok")
        seccomp_before = await svc.metric("pagi_sandbox_denials_total", layer="seccomp")
        await svc.execute(operator, tool_name="demo")
        svc.runner.result = RunResult(
            stdout="", stderr="", exit_code=1, duration_ms=2.0, seccomp_refusals=3
        )
        await svc.execute(operator, tool_name="python", code="import socket")
        await svc.execute(operator, tool_name="no-such-<tool>")
        await svc.execute(token_for("sandbox", sub="bff"), tool_name="python", code="1")
        assert (
            await svc.metric("pagi_sandbox_tool_runs_total", tool="demo", outcome="ok")
            == runs_before + 1
        )
        assert await svc.metric("pagi_sandbox_tool_runs_total", tool="python", outcome="error") >= 1
        assert await svc.metric("pagi_sandbox_denials_total", layer="seccomp") == (
            seccomp_before + 3
        )
        assert (
            await svc.metric(
                "pagi_sandbox_tool_refusals_total", tool="unknown", reason="unknown_tool"
            )
            >= 1
        )
        assert (
            await svc.metric("pagi_sandbox_tool_refusals_total", tool="python", reason="forbidden")
            >= 1
        )
        text = (await svc.client.get("/metrics")).text
    assert "no-such" not in text  # a name sent by a client is never a label


async def test_queue_depth_and_429s_are_counted(sandbox, token_for):
    operator = token_for("sandbox")
    async with sandbox() as svc:
        replace_file(
            svc.policy,
            svc.policy.read_text()
            .replace("max_concurrent_runs = 4", "max_concurrent_runs = 1")
            .replace("queue_length = 64", "queue_length = 1"),
        )
        for _ in range(100):
            if await svc.metric("pagi_sandbox_run_slots") == 1:
                break
            await asyncio.sleep(0.05)
        refused_before = await svc.metric("pagi_sandbox_admission_refused_total")
        svc.runner.gate = asyncio.Event()
        calls = [asyncio.create_task(svc.execute(operator, tool_name="demo")) for _ in range(2)]
        for _ in range(100):
            if await svc.metric("pagi_sandbox_queue_depth") == 1:
                break
            await asyncio.sleep(0.02)
        assert await svc.metric("pagi_sandbox_runs_in_progress") == 1
        assert await svc.metric("pagi_sandbox_queue_depth") == 1
        third = await svc.execute(operator, tool_name="demo")
        assert third.status_code == 429
        assert await svc.metric("pagi_sandbox_admission_refused_total") == refused_before + 1
        svc.runner.gate.set()
        assert [c.status_code for c in await asyncio.gather(*calls)] == [200, 200]
        assert await svc.metric("pagi_sandbox_queue_depth") == 0


async def test_the_warm_path_and_layers_come_from_the_isolation_report(sandbox):
    async with sandbox() as svc:
        assert await svc.metric("pagi_sandbox_warm_path_state", state="ready") == 1
        assert await svc.metric("pagi_sandbox_warm_path_state", state="cold_fallback") == 0
        restarts = await svc.metric("pagi_sandbox_warm_zygote_restarts_total")
        svc.runner.warm = {"state": "degraded_cold_fallback", "zygotes_ready": 3, "restarts": 2}
        assert await svc.metric("pagi_sandbox_warm_path_state", state="ready") == 0
        assert await svc.metric("pagi_sandbox_warm_path_state", state="degraded_cold_fallback") == 1
        assert await svc.metric("pagi_sandbox_warm_zygotes_ready") == 3
        assert await svc.metric("pagi_sandbox_warm_zygote_restarts_total") == restarts + 2
        assert await svc.metric("pagi_sandbox_isolation_layer_active", layer="seccomp") == 1
        assert await svc.metric("pagi_sandbox_isolation_layer_active", layer="cgroup") == 0
        assert await svc.metric("pagi_sandbox_audit_writable") == 1


async def test_policy_reloads_and_refused_edits_are_counted(sandbox):
    async with sandbox() as svc:
        reloads = await svc.metric("pagi_sandbox_policy_reloads_total")
        refused = await svc.metric("pagi_sandbox_policy_edits_refused_total")
        store = svc.client._transport.app.state.sandbox.store  # type: ignore[attr-defined]
        good = svc.policy.read_text()
        replace_file(svc.policy, good + "\n# an edit\n")
        store.refresh()
        replace_file(svc.policy, good + "\n[nonsense\n")
        store.refresh()
        store.refresh()  # the same refused edit, seen again, is not counted twice
        assert await svc.metric("pagi_sandbox_policy_reloads_total") == reloads + 1
        assert await svc.metric("pagi_sandbox_policy_edits_refused_total") == refused + 1
        assert await svc.metric("pagi_sandbox_policy_edit_refused") == 1
        replace_file(svc.policy, good)
        store.refresh()
        assert await svc.metric("pagi_sandbox_policy_edit_refused") == 0
