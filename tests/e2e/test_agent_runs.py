"""Agent runs against the real stack: gateway, sandbox, memory, agent and bff as processes.

The model is an OpenAI-compatible server on loopback that scripts tool calls
(:mod:`testing.scripted_model`); tools really run in the sandbox's jail.
A second stack uses the built-in local backend, and a third has no sandbox.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pagi.stack import Stack
from testing.scripted_model import SLOW_SECONDS, ScriptedModel, goal_for
from testing.stack import StackFactory, launch_stack, stack_env

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModel]:
    server = ScriptedModel().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, model: ScriptedModel
) -> Iterator[Stack]:
    env = stack_env(
        tmp_path_factory.mktemp("runs-e2e"),
        keys_dir,
        MODEL_BACKEND="openai",
        MODEL_BASE_URL=model.base_url,
        MODEL_NAME="scripted",
        PAGI_GATEWAY_RETRY_BASE_SECONDS="0.05",
        PAGI_GATEWAY_RETRY_CAP_SECONDS="0.1",
        MODEL_GATEWAY_GRPC_TIMEOUT_SECONDS="5",
        PAGI_AGENT_SUMMARY_SECONDS="2",
        PAGI_AGENT_MAX_CONCURRENT_RUNS="3",
    )
    running = launch_stack(env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def agent_url(stack: Stack) -> str:
    return stack.settings.url_of("agent")


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('agent')}"}


def unique(script: str) -> str:
    """A goal following ``script``, told apart from every other by an id."""
    return goal_for(script, f"Goal {uuid.uuid4().hex[:8]}.")


def run(url: str, auth: dict[str, str], goal: str, **budgets: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"goal": goal}
    if budgets:
        body["budgets"] = budgets
    response = httpx.post(f"{url}/api/v1/runs", json=body, headers=auth, timeout=RUN_TIMEOUT)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["stored"] is True, answer["store_error"]
    return answer["run"]


def events_of(lines: list[str]) -> list[tuple[int, str, dict[str, Any]]]:
    events, fields = [], {}
    for line in [*lines, ""]:
        if not line:
            if "event" in fields and "data" in fields:  # a whole event, not one cut short
                events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return events


def calls_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for step in record["steps"] for call in step["calls"]]


# ---------------------------------------------------------------------- answers


def test_one_call_then_the_answer_and_the_run_is_in_memory(
    agent_url: str, auth, stack: Stack, token_for, model: ScriptedModel
) -> None:
    goal = unique("one-call")
    record = run(agent_url, auth, goal)
    assert (record["status"], record["reason"]) == ("completed", "completed")
    assert record["answer"] == "The answer is 42"
    [call] = calls_of(record)
    assert call["tool"] == "python" and call["result"]["stdout"] == "42\n"
    assert call["result"]["tool_status"] == "ok" and call["result"]["exit_code"] == 0
    assert record["tools"] == ["demo", "python"]
    assert record["caller"] == "operator" and record["model"] == "scripted"
    assert record["usage"]["total_tokens"] == 240 and record["usage"]["model_calls"] == 2
    # The model was offered the agent's tools and got the observation as JSON.
    first, second = model.of_goal(goal)
    assert {t["function"]["name"] for t in first.body["tools"]} == {"demo", "python"}
    observation = json.loads(second.body["messages"][-1]["content"])
    assert observation["stdout"] == "42\n" and observation["tool_status"] == "ok"
    # Readable back: through the agent and from memory itself.
    again = httpx.get(f"{agent_url}/api/v1/runs/{record['id']}", headers=auth).json()
    assert again["stored"] is True and again["run"] == record
    memory = stack.settings.url_of("memory")
    stored = httpx.get(
        f"{memory}/memory/runs/{record['id']}",
        headers={"Authorization": f"Bearer {token_for('memory')}"},
    ).json()["run"]
    assert stored["status"] == "completed" and stored["document"]["answer"] == record["answer"]
    listed = httpx.get(f"{agent_url}/api/v1/runs", params={"limit": 5}, headers=auth).json()
    assert record["id"] in [item["id"] for item in listed["runs"]]


def test_several_calls_in_one_turn(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("two-calls"))
    assert record["answer"] == "Outputs: 1 2"
    assert [c["result"]["stdout"] for c in calls_of(record)] == ["1\n", "2\n"]


def test_a_tool_the_agent_may_not_run_is_refused_not_run(
    agent_url: str, auth, stack: Stack
) -> None:
    record = run(agent_url, auth, unique("forbidden"))
    [call] = calls_of(record)
    assert call["result"]["executed"] is False and call["result"]["error_kind"] == "not_offered"
    assert "no tool named 'shell' is on offer" in record["answer"]
    audit = Path(stack.env["PAGI_STATE_DIR"]) / "sandbox-audit.jsonl"
    assert '"tool": "shell"' not in audit.read_text()


def test_malformed_arguments_are_an_error_the_model_sees(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("malformed"))
    [call] = calls_of(record)
    assert call["result"]["error_kind"] == "bad_arguments"
    assert "not valid JSON" in record["answer"]


def test_a_write_the_sandbox_denies_comes_back_as_the_tools_failure(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("denied"))
    [call] = calls_of(record)
    result = call["result"]
    assert result["executed"] is True and result["tool_status"] == "error"
    assert "Error" in result["stderr"]


# ---------------------------------------------------------------------- budgets and ends


def test_a_model_that_never_stops_ends_at_max_steps_with_a_summary(
    agent_url: str, auth, model: ScriptedModel
) -> None:
    goal = unique("endless")
    record = run(agent_url, auth, goal, max_steps=3)
    assert (record["status"], record["reason"]) == ("stopped", "max_steps")
    assert len(calls_of(record)) == 3 and record["usage"]["steps"] == 3
    assert record["answer"].startswith("Summary after 3 turns")
    last = model.of_goal(goal)[-1].body
    assert last["tool_choice"] == "none"
    assert "step budget (3 steps) is spent" in last["messages"][-1]["content"]


def test_the_same_call_with_the_same_result_is_stuck(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("stuck"), max_steps=10)
    assert (record["status"], record["reason"]) == ("stopped", "stuck")
    assert len(calls_of(record)) == 3


def test_a_model_failing_mid_run_is_model_error(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("failing"))
    assert (record["status"], record["reason"]) == ("failed", "model_error")
    assert len(calls_of(record)) == 1 and "gave up after" in record["detail"]


def test_the_token_budget(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("greedy"), max_model_tokens=9000, max_steps=10)
    assert (record["status"], record["reason"]) == ("stopped", "token_budget")
    # 4000 tokens a call: the third goes over, and its calls do not run.
    executed = [c for c in calls_of(record) if c["result"]["executed"]]
    assert len(executed) == 2


def test_the_tool_output_budget(agent_url: str, auth) -> None:
    record = run(agent_url, auth, unique("loud"), max_tool_output_bytes=100_000, max_steps=10)
    assert (record["status"], record["reason"]) == ("stopped", "tool_output_budget")
    assert record["usage"]["tool_output_bytes"] >= 100_000
    assert len(calls_of(record)) == 2
    # The model saw each output capped, head and tail.
    assert all(len(c["result"]["stdout"]) <= 4096 for c in calls_of(record))
    assert all(c["result"]["stdout_truncated"] for c in calls_of(record))


def test_the_deadline(agent_url: str, auth) -> None:
    started = time.monotonic()
    record = run(agent_url, auth, unique("slow"), deadline_seconds=4, max_steps=20)
    elapsed = time.monotonic() - started
    assert (record["status"], record["reason"]) == ("stopped", "deadline")
    assert elapsed < 4 + SLOW_SECONDS
    assert record["duration_ms"] <= 4000 + 500


def test_budgets_above_their_ceilings_and_bad_bodies_are_clear_4xx(agent_url: str, auth) -> None:
    cases = [
        ({"goal": "x", "budgets": {"max_steps": 51}}, 422),
        ({"goal": "x", "budgets": {"deadline_seconds": 601}}, 422),
        ({"goal": "x", "budgets": {"max_steps": 0}}, 422),
        ({"goal": "x", "budgets": {"surprise": 1}}, 422),
        ({"goal": "   "}, 422),
        ({"goal": "x", "extra": True}, 422),
        ({"goal": "x" * 200_000}, 413),
    ]
    for body, status in cases:
        response = httpx.post(f"{agent_url}/api/v1/runs", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]
    assert httpx.post(f"{agent_url}/api/v1/runs", json={"goal": "x"}).status_code == 401
    assert httpx.get(f"{agent_url}/api/v1/runs/run_{'0' * 32}", headers=auth).status_code == 404
    assert httpx.get(f"{agent_url}/api/v1/runs/nope", headers=auth).status_code == 422
    assert httpx.get(f"{agent_url}/api/v1/runs?limit=0", headers=auth).status_code == 422
    refused = httpx.delete(f"{agent_url}/api/v1/runs", headers=auth)
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, POST"


# ---------------------------------------------------------------------- live, and cancelled


def test_the_stream_sends_typed_events_with_ids_and_matches_the_record(
    agent_url: str, auth
) -> None:
    with httpx.stream(
        "POST",
        f"{agent_url}/api/v1/runs/stream",
        json={"goal": unique("two-calls")},
        headers=auth,
        timeout=RUN_TIMEOUT,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = events_of(list(response.iter_lines()))
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert [e[1] for e in events] == [
        "run.started",
        "model.message",
        "tool.call",
        "tool.result",
        "tool.call",
        "tool.result",
        "model.message",
        "run.completed",
    ]
    completed = events[-1][2]
    assert (completed["status"], completed["reason"]) == ("completed", "completed")
    assert completed["usage"]["tool_calls"] == 2
    run_id = events[0][2]["run_id"]
    for _ in range(50):
        stored = httpx.get(f"{agent_url}/api/v1/runs/{run_id}", headers=auth).json()
        if stored["stored"]:
            break
        time.sleep(0.1)
    assert stored["run"]["answer"] == completed["answer"] == "Outputs: 1 2"


def _open_sleepy_stream(agent_url: str, auth: dict[str, str], request_id: str):
    """A streamed run whose tool sleeps; returns the stream once its tool is running."""
    context = httpx.stream(
        "POST",
        f"{agent_url}/api/v1/runs/stream",
        json={"goal": unique("sleepy")},
        headers={**auth, "X-Request-Id": request_id},
        timeout=RUN_TIMEOUT,
    )
    response = context.__enter__()
    assert response.status_code == 200
    lines: list[str] = []
    # One iterator, kept open: leaving a loop over iter_lines() would close the connection.
    reading = response.iter_lines()
    while not lines or lines[-1] != "event: tool.call":
        lines.append(next(reading))
    context.reading = reading  # type: ignore[attr-defined]
    return context, events_of(lines)[0][2]["run_id"]


def test_a_client_that_disconnects_cancels_the_run_and_its_tool_run(
    agent_url: str, auth, stack: Stack
) -> None:
    request_id = f"cancel-{uuid.uuid4().hex[:8]}"
    context, run_id = _open_sleepy_stream(agent_url, auth, request_id)
    time.sleep(0.5)  # the tool is in the jail, sleeping
    cut = time.monotonic()
    context.__exit__(None, None, None)
    record = None
    for _ in range(100):
        answer = httpx.get(f"{agent_url}/api/v1/runs/{run_id}", headers=auth).json()
        if answer["stored"] and answer["run"]["status"] != "running":
            record = answer["run"]
            break
        time.sleep(0.05)
    assert record is not None, "the run was not recorded as ended"
    assert (record["status"], record["reason"]) == ("cancelled", "cancelled")
    # The sandbox stopped the tool run (its wall limit is 5 s) and holds nothing.
    audit = Path(stack.env["PAGI_STATE_DIR"]) / "sandbox-audit.jsonl"
    found = None
    while found is None and time.monotonic() - cut < 4:
        for line in audit.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("request_id") == request_id and entry.get("kind") == "execute_tool":
                found = entry
        time.sleep(0.05)
    assert found is not None, "the tool run was not stopped before its own limit"
    assert found["status"] == 499 and found["reason"] == "request cancelled"
    sandbox = stack.settings.url_of("sandbox")
    assert httpx.get(f"{sandbox}/health").json()["admission"]["running"] == 0


def test_a_client_giving_up_on_a_run_cancels_it(agent_url: str, auth) -> None:
    goal = unique("sleepy")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{agent_url}/api/v1/runs", json={"goal": goal}, headers=auth, timeout=1.0)
    for _ in range(100):
        listed = httpx.get(f"{agent_url}/api/v1/runs", headers=auth).json()["runs"]
        mine = [item for item in listed if item["goal"] == goal]
        if mine and mine[0]["status"] != "running":
            break
        time.sleep(0.05)
    assert mine and (mine[0]["status"], mine[0]["reason"]) == ("cancelled", "cancelled")


def test_runs_beyond_the_limit_get_429_with_retry_after(agent_url: str, auth) -> None:
    streams = [_open_sleepy_stream(agent_url, auth, f"busy-{n}")[0] for n in range(3)]
    try:
        refused = httpx.post(f"{agent_url}/api/v1/runs", json={"goal": "x"}, headers=auth)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "too_many_runs"
    finally:
        for context in streams:
            context.__exit__(None, None, None)


# ---------------------------------------------------------------------- through the bff


def test_the_bff_relays_the_stream_and_the_dashboard_shows_the_latest_run(
    stack: Stack, token_for
) -> None:
    bff = stack.settings.url_of("bff")
    with httpx.stream(
        "POST",
        f"{bff}/api/v1/agi/runs/stream",
        json={"goal": unique("one-call")},
        headers={"Authorization": f"Bearer {token_for('bff')}"},
        timeout=RUN_TIMEOUT,
    ) as response:
        assert response.status_code == 200
        events = events_of(list(response.iter_lines()))
    assert events[-1][1] == "run.completed" and events[-1][2]["answer"] == "The answer is 42"
    run_id = events[0][2]["run_id"]
    assert events[0][2]["caller"] == "bff"
    for _ in range(50):
        dashboard = httpx.get(f"{bff}/api/v1/agi/dashboard-data").json()
        if (dashboard.get("latest_run") or {}).get("status") == "completed":
            break
        time.sleep(0.1)
    assert set(dashboard["data"]) == {"python_agent", "rust_sandbox", "memory"}
    latest = dashboard["latest_run"]
    assert latest["id"] == run_id and latest["reason"] == "completed"
    assert latest["answer"] == "The answer is 42"


# ---------------------------------------------------------------------- the local backend


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("runs-local"), keys_dir)
    running = launch_stack(env, ["gateway", "memory", "sandbox", "agent"])
    yield running
    running.stop()


def test_the_local_backend_runs_the_goals_python_blocks(local_stack: Stack, auth) -> None:
    url = local_stack.settings.url_of("agent")
    goal = "Add up.\n```python\nprint(sum(range(10)))\n```\n```py\nprint(2 ** 10)\n```"
    record = run(url, auth, goal)
    assert (record["status"], record["reason"]) == ("completed", "completed")
    assert record["answer"] == "Block 1: 45\nBlock 2: 1024"
    assert record["backend"] == "local" and record["usage"]["steps"] == 3
    plan = run(url, auth, "What is the 20th Fibonacci number? Compute it.")
    assert plan["answer"].startswith("A plan:\n1. ") and plan["steps"][0]["calls"] == []


def test_without_a_sandbox_a_run_says_why_it_has_no_tools(start_stack: StackFactory, auth) -> None:
    partial = start_stack(["gateway", "memory", "agent"])
    url = partial.settings.url_of("agent")
    record = run(url, auth, "Run this.\n```python\nprint(1)\n```")
    assert record["status"] == "completed" and record["tools"] == []
    assert "unreachable" in record["tools_error"]
    assert record["answer"].startswith("The python tool is not on offer, so no code ran.")
