"""Whatever a model asks for and whatever a client sends, a run ends cleanly.

- Model side: decisions with any tool names, ids, argument texts and
  contents (several calls a turn, repeated ids, tools not on offer). The
  loop never raises, ends with one of its statuses and reasons, runs only
  offered tools with well-formed arguments, and every conversation it sends
  can go on the wire.
- Client side: any JSON body for ``POST /api/v1/runs`` is answered with the
  finished run or a clear 4xx, never a 500.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app import create_app
from agent.run_models import RunReason, RunStatus
from agent.settings import AgentSettings
from gateway.conversation import Decision, ToolCall, Usage, conversation_to_proto
from testing.stack import free_port
from tests.unit.agent.fake_gateway import FakeGateway
from tests.unit.agent.loop_fakes import FakeSandbox, ScriptedDecider, make_run

STATUSES = set(get_args(RunStatus)) - {"running"}
REASONS = set(get_args(RunReason))

names = st.sampled_from(["python", "demo", "shell", "", "PYTHON", "python "]) | st.text(max_size=80)
arguments = (
    st.sampled_from(['{"code": "print(1)"}', "{}", "", "{", "null", '{"code": ""}', "[]"])
    | st.text(max_size=100)
    | st.builds(json.dumps, st.dictionaries(st.text(max_size=10), st.text(max_size=20)))
)
tool_calls = st.lists(
    st.builds(
        ToolCall,
        id=st.sampled_from(["c1", "c1", "", "x" * 200]) | st.text(max_size=20),
        name=names,
        arguments=arguments,
    ),
    max_size=6,
)
decisions = st.builds(
    Decision,
    tool_calls=tool_calls.map(tuple),
    content=st.text(max_size=200),
    finish_reason=st.text(max_size=20),
    usage=st.builds(Usage, st.integers(0, 10_000), st.integers(0, 10_000)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=st.lists(decisions, min_size=1, max_size=6))
async def test_any_model_decisions_end_the_run_cleanly(script: list[Decision]) -> None:
    decider = ScriptedDecider(lambda conversation, number: script[number % len(script)])
    sandbox = FakeSandbox()
    made = make_run(decider, sandbox, max_steps=4, max_model_tokens=50_000)
    record = await made.run.run()
    assert record.status in STATUSES and record.reason in REASONS
    assert record.answer is not None
    assert made.types()[0] == "run.started" and made.types()[-1] == "run.completed"
    for tool, code in sandbox.runs:
        assert tool in ("python", "demo")
        assert (code is None) == (tool == "demo")
    for conversation in decider.seen:
        conversation_to_proto(conversation).SerializeToString()
        for message in conversation.messages:
            if message.role == "tool":
                assert isinstance(json.loads(message.content), dict)
    json.loads(record.model_dump_json())


# ---------------------------------------------------------------------- request bodies

budgets = st.fixed_dictionaries(
    {},
    optional={
        "max_steps": st.integers(-5, 2000) | st.none() | st.text(max_size=3),
        "deadline_seconds": st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-1, 10_000),
        "max_model_tokens": st.integers(-1, 10**9),
        "max_tool_output_bytes": st.integers(-1, 2**31),
        "other": st.integers(),
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "goal": st.text(max_size=60) | st.integers() | st.none(),
        "budgets": budgets | st.text(max_size=5) | st.none(),
        "extra": st.booleans(),
    },
) | st.recursive(st.none() | st.integers() | st.text(max_size=5), st.lists, max_leaves=5)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
async def test_any_request_body_is_a_run_or_a_clear_4xx(keys_dir: Path, token_for, body) -> None:
    settings_ = AgentSettings(
        _env_file=None,
        pagi_keys_dir=keys_dir,
        memory_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: runs are not stored
        request_timeout_seconds=0.5,
        pagi_agent_run_deadline_seconds=5,
        pagi_agent_run_deadline_seconds_ceiling=10,
        pagi_agent_run_steps=2,
        pagi_agent_run_steps_ceiling=3,
    )
    app = create_app(settings_, gateway=FakeGateway(), sandbox=FakeSandbox())
    headers = {"Authorization": f"Bearer {token_for('agent')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
            response = await http.post("/api/v1/runs", json=body, headers=headers)
    assert response.status_code in (200, 413, 422), response.text
    answer = response.json()
    if response.status_code == 200:
        assert answer["run"]["status"] in STATUSES
        assert answer["stored"] is False and "memory" in answer["store_error"]
    else:
        assert answer["error"]


async def test_a_goal_that_is_not_valid_unicode_is_refused(keys_dir: Path, token_for) -> None:
    settings_ = AgentSettings(_env_file=None, pagi_keys_dir=keys_dir)
    app = create_app(settings_, gateway=FakeGateway(), sandbox=FakeSandbox())
    headers = {"Authorization": f"Bearer {token_for('agent')}", "Content-Type": "application/json"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
            response = await http.post(
                "/api/v1/runs", content=b'{"goal": "run \\ud800 this"}', headers=headers
            )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "goal"]
