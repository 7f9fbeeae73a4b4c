"""Runs stored in the real memory app (in-process): written in order, read back, fitted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from agent.run_models import (
    Budgets,
    ModelTurn,
    RunRecord,
    Step,
    ToolCallRecord,
    ToolResult,
)
from agent.run_store import RunRecorder, RunStore, RunStoreError, fit_document
from memory.app import create_app
from memory.settings import MemorySettings


def record(run_id: str = "run_" + "a" * 32, steps: int = 0, output: str = "") -> RunRecord:
    return RunRecord(
        id=run_id,
        goal="add numbers " * 50,
        caller="operator",
        request_id="r1",
        status="running",
        budgets=Budgets(
            max_steps=5, deadline_seconds=10, max_model_tokens=100, max_tool_output_bytes=100
        ),
        started_at="2026-01-01T00:00:00+00:00",
        steps=[
            Step(
                index=n + 1,
                model=ModelTurn(content="thinking " * 10),
                calls=[
                    ToolCallRecord(
                        id="c",
                        tool="python",
                        arguments='{"code": "print(1)"}',
                        result=ToolResult(executed=True, tool_status="ok", stdout=output),
                    )
                ],
            )
            for n in range(steps)
        ],
    )


@pytest.fixture
async def memory_client(tmp_path: Path, keys_dir: Path, token_for: Callable[..., str]):
    settings = MemorySettings(_env_file=None, pagi_state_dir=tmp_path, pagi_keys_dir=keys_dir)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token_for('memory', sub='agent')}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://memory", headers=headers
        ) as http:
            yield http


@pytest.fixture
async def store(memory_client: httpx.AsyncClient) -> AsyncIterator[RunStore]:
    yield RunStore(memory_client, timeout_seconds=2.0, max_bytes=64 * 1024)


async def test_put_get_and_list(store: RunStore) -> None:
    run = record(steps=2, output="42\n")
    await store.put(run)
    assert await store.get(run.id) == run
    run.status, run.reason, run.answer = "completed", "completed", "x" * 500
    run.usage.steps = 2
    await store.put(run)
    again = await store.get(run.id)
    assert again is not None and again.status == "completed"
    [item] = await store.recent(10)
    assert (item.id, item.status, item.reason, item.steps) == (run.id, "completed", "completed", 2)
    assert len(item.goal) == 200 and len(item.answer) == 200
    assert await store.get("run_" + "b" * 32) is None


async def test_a_finished_run_is_refused_a_different_final_write(store: RunStore) -> None:
    run = record()
    run.status = "completed"
    await store.put(run)
    await store.put(run)  # the same again: a retry
    run.answer = "changed"
    with pytest.raises(RunStoreError) as caught:
        await store.put(run)
    assert caught.value.status_code == 409


def test_a_large_run_is_fitted_older_outputs_first() -> None:
    run = record(steps=10, output="o" * 10_000)
    document = fit_document(run, 64 * 1024)
    assert document["trimmed"] is True
    outputs = [step["calls"][0]["result"]["stdout"] for step in document["steps"]]
    assert all(len(o) == 200 for o in outputs[:-3]) and all(len(o) == 10_000 for o in outputs[-3:])
    assert document["steps"][0]["calls"][0]["result"]["stdout_truncated"] is True
    small = fit_document(run, 16 * 1024)
    assert all(len(s["calls"][0]["result"]["stdout"]) == 200 for s in small["steps"])
    tiny = fit_document(run, 1024)
    assert tiny["steps"] == [] and tiny["trimmed"] is True
    # Whatever was cut, what is stored is still a run.
    for stored in (document, small, tiny):
        assert RunRecord.model_validate(stored).id == run.id
    assert fit_document(record(), 64 * 1024)["trimmed"] is False


async def test_the_recorder_writes_in_order_and_coalesces(store: RunStore) -> None:
    run = record()
    puts: list[str] = []
    original = store.put

    async def counting_put(current: RunRecord) -> None:
        puts.append(current.status)
        await asyncio.sleep(0.01)
        await original(current)

    store.put = counting_put  # type: ignore[method-assign]
    recorder = RunRecorder(store, lambda: run)
    for _ in range(20):
        recorder.changed()
        await asyncio.sleep(0)
    run.status = "completed"
    assert await recorder.finish(2.0) is True
    # Twenty changes while one write was in flight: two writes, the last one final.
    assert puts == ["running", "completed"]
    stored = await store.get(run.id)
    assert stored is not None and stored.status == "completed"


async def test_the_recorder_retries_the_final_write_then_gives_up(keys_dir: Path) -> None:
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            return httpx.Response(503, json={"error": "database_unavailable", "detail": "locked"})
        return httpx.Response(200, json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://memory")
    run = record()
    run.status = "completed"
    recorder = RunRecorder(RunStore(client, 1.0, 64 * 1024), lambda: run)
    assert await recorder.finish(3.0) is True and attempts == 3
    never = RunRecorder(
        RunStore(
            httpx.AsyncClient(
                transport=httpx.MockTransport(lambda r: httpx.Response(503, json={})),
                base_url="http://memory",
            ),
            1.0,
            64 * 1024,
        ),
        lambda: run,
    )
    assert await never.finish(0.5) is False
    assert never.last_error == "memory answered 503"
