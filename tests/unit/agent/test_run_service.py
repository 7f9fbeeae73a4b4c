"""The run service: budgets from settings, the concurrency limit, recording, shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from agent import tool_calls
from agent.run_service import RunService
from agent.run_store import RunStore
from agent.settings import AgentSettings
from pagi.errors import ApiError
from pagi.run_request import BudgetRequest, RunRequest
from tests.unit.agent.loop_fakes import FakeSandbox, ScriptedDecider, answer, calls


class FakeMemory:
    """Accepts every run written, keeps the last body of each."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.rsplit("/", 1)[-1]
        if request.method == "PUT":
            self.runs[run_id] = json.loads(request.content)
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": "run_not_found"})


def service(keys_dir: Path, decider, sandbox, memory: FakeMemory, **fields) -> RunService:
    settings = AgentSettings(_env_file=None, pagi_keys_dir=keys_dir, **fields)
    client = httpx.AsyncClient(transport=httpx.MockTransport(memory), base_url="http://memory")
    return RunService(settings, decider, sandbox, RunStore(client, 1.0, 1024 * 1024))


async def test_a_run_takes_the_default_budgets_and_is_stored_finished(keys_dir: Path) -> None:
    memory = FakeMemory()
    runs = service(
        keys_dir,
        ScriptedDecider(lambda c, n: answer("done")),
        FakeSandbox(),
        memory,
        pagi_agent_run_steps=7,
    )
    active = runs.start(RunRequest(goal="g"), "operator", "rid", streamed=False)
    record = await active.task
    assert record.budgets.max_steps == 7 and record.budgets.deadline_seconds == 120
    assert active.recorder.stored_final
    stored = memory.runs[record.id]
    assert stored["status"] == "completed" and stored["summary"]["answer"] == "done"
    assert runs.active == {}
    assert (await runs.get(record.id)) is None  # the fake memory keeps nothing readable


async def test_runs_beyond_the_limit_are_refused_with_retry_after(keys_dir: Path) -> None:
    decider = ScriptedDecider(lambda c, n: answer("late"), delay=10)
    memory = FakeMemory()
    runs = service(keys_dir, decider, FakeSandbox(), memory, pagi_agent_max_concurrent_runs=2)
    started = [runs.start(RunRequest(goal="g"), "op", None, streamed=False) for _ in range(2)]
    with pytest.raises(ApiError) as caught:
        runs.start(RunRequest(goal="g"), "op", None, streamed=False)
    assert caught.value.status_code == 429 and caught.value.headers["Retry-After"] == "1"
    await runs.shutdown()
    assert all(active.task.cancelled() for active in started)
    assert all(active.record.status == "cancelled" for active in started)
    # Cancelled before they began, and still recorded as ended.
    assert [memory.runs[a.record.id]["status"] for a in started] == ["cancelled", "cancelled"]


async def test_a_budget_above_its_ceiling_is_refused(keys_dir: Path) -> None:
    runs = service(keys_dir, ScriptedDecider(lambda c, n: answer("x")), FakeSandbox(), FakeMemory())
    request = RunRequest(goal="g", budgets=BudgetRequest(max_steps=51))
    with pytest.raises(ApiError) as caught:
        runs.start(request, "op", None, streamed=False)
    assert caught.value.status_code == 422
    assert caught.value.detail[0]["loc"] == ["body", "budgets", "max_steps"]


async def test_a_bug_in_the_loop_ends_the_run_failed_and_recorded(
    keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(tool_calls, "result_of", broken)
    memory = FakeMemory()
    decider = ScriptedDecider(lambda c, n: calls(("python", {"code": "x"})))
    runs = service(keys_dir, decider, FakeSandbox(), memory)
    active = runs.start(RunRequest(goal="g"), "op", None, streamed=True)
    record = await active.task
    assert (record.status, record.reason) == ("failed", "model_error")
    assert memory.runs[record.id]["status"] == "failed"
    events = []
    while not active.events.empty():
        events.append(active.events.get_nowait()[1])
    assert events[0] == "run.started" and events[-1] == "run.completed"


async def test_a_streamed_run_numbers_its_events(keys_dir: Path) -> None:
    decider = ScriptedDecider(
        lambda c, n: calls(("python", {"code": "x"})) if n == 0 else answer("ok")
    )
    runs = service(keys_dir, decider, FakeSandbox(), FakeMemory())
    active = runs.start(RunRequest(goal="g"), "op", None, streamed=True)
    seen = [item async for item in active.stream(keepalive_seconds=5)]
    assert [item[0] for item in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1] == "run.completed"
    await asyncio.wait_for(active.task, 5)
