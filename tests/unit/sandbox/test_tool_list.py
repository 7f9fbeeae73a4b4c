"""``GET /api/v1/tools`` and a client hanging up mid-run, on the sandbox app.

The runner is a stand-in (the jail has its own tests): what is checked here
is what the service lists for whom, and that a run whose client has gone is
stopped instead of running on for nobody.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from sandbox.spec import RunResult, RunSpec
from testing.stack import free_port

REPO = Path(__file__).resolve().parents[3]

POLICY = """
[tools.demo]
description = "Says hello."
argv = ["/bin/echo", "hi"]

[tools.python]
description = "Runs Python."
argv = ["{python}", "-I", "main.py"]
code = "file"
code_file = "main.py"
max_code_bytes = "32 KiB"
[tools.python.limits]
wall_seconds = 7
output_bytes = "16 KiB"
[tools.python.files]
input_files = 3
input_bytes = "2 KiB"
output_files = 0

[tools.demo.files]
input_files = 0

[tools.secret]
argv = ["/bin/true"]

[callers.agent]
tools = ["demo", "python"]

[callers.operator]
tools = ["*"]
"""


class GatedRunner:
    """Runs nothing: each run waits on a gate, and says whether it was cancelled."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[RunSpec] = []
        self.cancelled: list[RunSpec] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def run(self, spec: RunSpec) -> RunResult:
        self.started.append(spec)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(spec)
            raise
        return RunResult(stdout="done\n", stderr="", exit_code=0, duration_ms=1.0)

    def isolation_report(self) -> dict[str, Any]:
        return {}

    def missing_layers(self, required: Iterable[str]) -> list[str]:
        return []

    async def reload(self, policy_version: str) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path, keys_dir: Path) -> SandboxSettings:
    policy = tmp_path / "policy" / "sandbox.toml"
    policy.parent.mkdir()
    policy.write_text(POLICY)
    return SandboxSettings(
        _env_file=None,
        pagi_sandbox_policy=policy,
        pagi_state_dir=tmp_path / "state",
        pagi_keys_dir=keys_dir,
    )


@asynccontextmanager
async def serving(settings: SandboxSettings, runner: GatedRunner) -> AsyncIterator[str]:
    """The app under uvicorn on a loopback port (a real server notices hang-ups)."""
    app = create_app(settings, runner=runner)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        assert not task.done(), "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        runner.gate.set()
        server.should_exit = True
        await task


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_caller_sees_the_tools_its_entry_names(
    settings: SandboxSettings, token_for: Callable[..., str]
) -> None:
    async with serving(settings, GatedRunner()) as url, httpx.AsyncClient(base_url=url) as http:
        agent = await http.get("/api/v1/tools", headers=bearer(token_for("sandbox", "agent")))
        assert agent.status_code == 200
        listed = agent.json()
        assert listed["caller"] == "agent"
        assert [tool["name"] for tool in listed["tools"]] == ["demo", "python"]
        demo, python = listed["tools"]
        assert demo == {
            "name": "demo",
            "description": "Says hello.",
            "takes_code": False,
            "code": "none",
            "max_code_bytes": 0,
            "wall_seconds": 5.0,
            "output_bytes": 64 * 1024,
            "network": False,
            "egress_allow": [],
            "input_files": 0,
            "input_bytes": 0,
            "output_files": 16,
            "output_file_bytes": 1024 * 1024,
        }
        assert python["takes_code"] is True and python["code"] == "file"
        assert (python["input_files"], python["input_bytes"]) == (3, 2048)
        assert (python["output_files"], python["output_file_bytes"]) == (0, 0)
        assert python["max_code_bytes"] == 32 * 1024
        assert python["wall_seconds"] == 7 and python["output_bytes"] == 16 * 1024

        operator = await http.get("/api/v1/tools", headers=bearer(token_for("sandbox")))
        assert [t["name"] for t in operator.json()["tools"]] == ["demo", "python", "secret"]
        # A caller the policy does not name may run nothing, so sees nothing.
        bff = await http.get("/api/v1/tools", headers=bearer(token_for("sandbox", "bff")))
        assert bff.status_code == 200 and bff.json()["tools"] == []
        for headers in ({}, bearer(token_for("memory")), bearer("garbage")):
            refused = await http.get("/api/v1/tools", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"


async def test_the_list_follows_an_edit_of_the_policy(
    settings: SandboxSettings, token_for: Callable[..., str]
) -> None:
    token = token_for("sandbox", "agent")
    async with serving(settings, GatedRunner()) as url, httpx.AsyncClient(base_url=url) as http:
        before = (await http.get("/api/v1/tools", headers=bearer(token))).json()
        policy = settings.pagi_sandbox_policy
        policy.write_text(POLICY.replace('tools = ["demo", "python"]', 'tools = ["demo"]'))
        for _ in range(100):
            after = (await http.get("/api/v1/tools", headers=bearer(token))).json()
            if after["policy_version"] != before["policy_version"]:
                break
            await asyncio.sleep(0.05)
        assert [t["name"] for t in after["tools"]] == ["demo"]


async def test_a_client_hanging_up_stops_its_run(
    settings: SandboxSettings, token_for: Callable[..., str]
) -> None:
    runner = GatedRunner()
    async with serving(settings, runner) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            call = asyncio.create_task(
                http.post(
                    "/api/v1/execute_tool",
                    json={"tool_name": "python", "code": "print(1)"},
                    headers=bearer(token_for("sandbox", "agent")),
                )
            )
            for _ in range(200):
                if runner.started:
                    break
                await asyncio.sleep(0.01)
            assert runner.started, "the run did not start"
            call.cancel()  # closes the connection mid-request
            with pytest.raises(asyncio.CancelledError):
                await call
        for _ in range(200):
            if runner.cancelled:
                break
            await asyncio.sleep(0.01)
        assert [spec.tool for spec in runner.cancelled] == ["python"]
        records = [
            json.loads(line)
            for line in settings.audit_log_path.read_text().splitlines()
            if '"execute_tool"' in line
        ]
        assert records[-1]["status"] == 499 and records[-1]["reason"] == "request cancelled"


async def test_a_run_whose_client_waits_is_answered(
    settings: SandboxSettings, token_for: Callable[..., str]
) -> None:
    runner = GatedRunner()
    runner.gate.set()
    async with serving(settings, runner) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/api/v1/execute_tool",
            json={"tool_name": "python", "code": "print(1)"},
            headers=bearer(token_for("sandbox", "agent")),
        )
        assert response.status_code == 200 and response.json()["result"]["stdout"] == "done\n"
        assert runner.cancelled == []


def test_default_policy_lists_python_for_the_agent(tmp_path: Path, keys_dir: Path, token_for):
    policy = tmp_path / "sandbox.toml"
    shutil.copy(REPO / "policies" / "sandbox.toml", policy)
    settings = SandboxSettings(
        _env_file=None, pagi_sandbox_policy=policy, pagi_state_dir=tmp_path, pagi_keys_dir=keys_dir
    )

    async def listed() -> list[str]:
        async with serving(settings, GatedRunner()) as url, httpx.AsyncClient(base_url=url) as c:
            answer = await c.get("/api/v1/tools", headers=bearer(token_for("sandbox", "agent")))
            return [tool["name"] for tool in answer.json()["tools"]]

    assert asyncio.run(listed()) == ["demo", "python"]
