"""The agent loop with a scripted model and a fake sandbox: answers, refusals, budgets, ends."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from agent.sandbox_calls import ToolOutcome
from gateway.client import GatewayError
from gateway.conversation import Decision, Usage
from tests.unit.agent.loop_fakes import (
    LIMITS,
    FakeSandbox,
    ScriptedDecider,
    answer,
    calls,
    make_run,
    ok,
    tool_messages,
)


def first_then(first: Decision, then: Decision):
    return lambda conversation, number: first if number == 0 else then


async def test_one_call_then_an_answer() -> None:
    decider = ScriptedDecider(first_then(calls(("python", {"code": "print(1)"})), answer("1")))
    sandbox = FakeSandbox()
    made = make_run(decider, sandbox)
    record = await made.run.run()
    assert (record.status, record.reason, record.answer) == ("completed", "completed", "1")
    assert sandbox.runs == [("python", "print(1)")]
    assert made.types() == [
        "run.started",
        "model.message",
        "tool.call",
        "tool.result",
        "model.message",
        "run.completed",
    ]
    started = made.events[0][1]
    assert started["tools"] == ["python", "demo"] and started["budgets"]["max_steps"] == 5
    assert made.events[-1][1]["status"] == "completed"
    # The model was offered exactly the sandbox's tools, with their argument schemas.
    offered = decider.seen[0].tools
    assert [t.name for t in offered] == ["python", "demo"]
    assert offered[0].parameters["required"] == ["code"]
    assert offered[1].parameters == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert [m.role for m in decider.seen[0].messages] == ["system", "user"]
    [seen] = tool_messages(decider.seen[1])
    assert seen == {
        "tool": "python",
        "call_id": "c0",
        "tool_status": "ok",
        "exit_code": 0,
        "stdout": "ran python: print(1)\n",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
    }
    assert record.usage.steps == 2 and record.usage.model_calls == 2
    assert record.usage.total_tokens == 30 and record.usage.tool_calls == 1
    [step, final] = record.steps
    assert step.calls[0].result.executed and final.calls == []
    assert record.timings.overhead_ms >= 0 and record.duration_ms > 0
    assert made.changes, "the recorder was never told"


async def test_several_calls_in_one_turn_run_in_order_up_to_the_per_step_cap() -> None:
    many = calls(*[("python", {"code": f"print({n})"}) for n in range(5)])
    decider = ScriptedDecider(first_then(many, answer("done")))
    sandbox = FakeSandbox()
    record = await make_run(decider, sandbox).run.run()
    assert [code for _, code in sandbox.runs] == ["print(0)", "print(1)", "print(2)"]
    observations = tool_messages(decider.seen[1])
    assert [o["call_id"] for o in observations] == ["c0", "c1", "c2", "c3", "c4"]
    assert observations[3]["error"] == "not run: at most 3 tool calls per step"
    assert record.status == "completed"


async def test_a_tool_not_on_offer_is_an_error_and_never_runs() -> None:
    decider = ScriptedDecider(first_then(calls(("shell", {"cmd": "id"})), answer("ok")))
    sandbox = FakeSandbox()
    record = await make_run(decider, sandbox).run.run()
    assert sandbox.runs == []
    [seen] = tool_messages(decider.seen[1])
    assert seen["error_kind"] == "not_offered"
    assert "no tool named 'shell' is on offer (the tools are: python, demo)" in seen["error"]
    assert record.steps[0].calls[0].result.executed is False


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("python", '{"code": "print(1)"', "not valid JSON"),
        ("python", "[1]", "must be a JSON object"),
        ("python", "{}", 'needs {"code": "<program>"}'),
        ("python", '{"code": "   "}', "non-empty string"),
        ("python", '{"code": 5}', "non-empty string"),
        ("python", '{"code": "1", "shell": true}', "unexpected: shell"),
        ("demo", '{"code": "1"}', "demo takes no arguments"),
        ("python", "[" * 100_000, "nest too deeply"),
    ],
)
async def test_malformed_arguments_are_errors_and_never_run(tool, arguments, expected) -> None:
    decider = ScriptedDecider(first_then(calls((tool, arguments)), answer("ok")))
    sandbox = FakeSandbox()
    await make_run(decider, sandbox).run.run()
    assert sandbox.runs == []
    [seen] = tool_messages(decider.seen[1])
    assert seen["error_kind"] == "bad_arguments" and expected in seen["error"], seen


async def test_a_demo_call_with_empty_arguments_runs() -> None:
    decider = ScriptedDecider(first_then(calls(("demo", "")), answer("ok")))
    sandbox = FakeSandbox()
    await make_run(decider, sandbox).run.run()
    assert sandbox.runs == [("demo", None)]


async def test_outputs_are_capped_head_and_tail_and_say_so() -> None:
    big = "A" * 300 + "B" * 700 + "TAIL"
    sandbox = FakeSandbox(outcome=lambda tool, code: ok(big, "é" * 500))
    decider = ScriptedDecider(first_then(calls(("python", {"code": "x"})), answer("ok")))
    record = await make_run(decider, sandbox).run.run()
    [seen] = tool_messages(decider.seen[1])
    assert len(seen["stdout"].encode()) <= LIMITS.observation_bytes
    assert seen["stdout"].startswith("AAA") and seen["stdout"].endswith("TAIL")
    assert "bytes cut" in seen["stdout"] and seen["stdout_truncated"] is True
    assert len(seen["stderr"].encode()) <= LIMITS.observation_bytes
    result = record.steps[0].calls[0].result
    assert result.output_bytes == len(big) + 1000


async def test_sandbox_refusals_and_failures_reach_the_model_as_errors() -> None:
    outcomes = {
        "policy": ToolOutcome(403, {}, "the sandbox refused the call (403): no", "policy"),
        "busy": ToolOutcome(429, {}, "the sandbox is busy (retry after 1 s)", "busy"),
        "down": ToolOutcome(None, {}, "the sandbox is unreachable (ConnectError)", "unavailable"),
    }
    sandbox = FakeSandbox(outcome=lambda tool, code: outcomes[code])
    decider = ScriptedDecider(
        first_then(calls(*[("python", {"code": name}) for name in outcomes]), answer("ok"))
    )
    limits = LIMITS.__class__(**{**LIMITS.__dict__, "max_calls_per_step": 8})
    record = await make_run(decider, sandbox, limits=limits).run.run()
    kinds = [o["error_kind"] for o in tool_messages(decider.seen[1])]
    assert kinds == ["policy", "busy", "unavailable"]
    assert record.status == "completed"


async def test_denials_pass_through_when_the_sandbox_reports_them() -> None:
    denials = [{"layer": "landlock", "path": "/etc/shadow", "access": "read"}]
    sandbox = FakeSandbox(
        outcome=lambda tool, code: ToolOutcome(
            200,
            {
                "tool_status": "error",
                "result": {
                    "stdout": "",
                    "stderr": "PermissionError",
                    "exit_code": 1,
                    "denials": denials,
                    "seccomp_refusals": 2,
                },
            },
        )
    )
    decider = ScriptedDecider(first_then(calls(("python", {"code": "x"})), answer("ok")))
    await make_run(decider, sandbox).run.run()
    [seen] = tool_messages(decider.seen[1])
    assert seen["denials"] == denials and seen["seccomp_refusals"] == 2
    assert seen["tool_status"] == "error" and seen["exit_code"] == 1


async def test_max_steps_ends_with_a_summary_call_without_tools() -> None:
    endless = ScriptedDecider(lambda conv, n: calls(("python", {"code": f"print({n})"})))
    sandbox = FakeSandbox()
    made = make_run(endless, sandbox, max_steps=3)
    record = await made.run.run()
    assert (record.status, record.reason) == ("stopped", "max_steps")
    assert len(sandbox.runs) == 3 and record.usage.steps == 3
    summary_call = endless.seen[-1]
    assert summary_call.tool_choice == "none" and not summary_call.may_call_tools
    assert "step budget (3 steps) is spent" in summary_call.messages[-1].content
    assert record.answer == "summary after 3 calls"
    assert record.summary is not None and made.events[-2][1]["summary"] is True


async def test_the_same_call_with_the_same_result_three_times_is_stuck() -> None:
    same = ScriptedDecider(lambda conv, n: calls(("python", {"code": "print('same')"})))
    sandbox = FakeSandbox()
    record = await make_run(same, sandbox, max_steps=10).run.run()
    assert (record.status, record.reason) == ("stopped", "stuck")
    assert len(sandbox.runs) == 3
    assert record.detail == "the same tool call gave the same result 3 times"


async def test_the_token_budget_stops_the_run() -> None:
    greedy = ScriptedDecider(
        lambda conv, n: Decision(
            tool_calls=calls(("python", {"code": f"print({n})"})).tool_calls,
            usage=Usage(400, 100),
        )
    )
    sandbox = FakeSandbox()
    record = await make_run(greedy, sandbox, max_model_tokens=1200, max_steps=10).run.run()
    assert (record.status, record.reason) == ("stopped", "token_budget")
    # 500 tokens a call: the third call goes over, so its tool calls do not run.
    assert len(sandbox.runs) == 2
    assert record.steps[2].calls[0].result.error == "not run: the model token budget is spent"


async def test_the_tool_output_budget_stops_the_run_and_skips_later_calls() -> None:
    loud = ScriptedDecider(
        lambda conv, n: calls(("python", {"code": "a"}), ("python", {"code": "b"}), prefix=f"s{n}")
    )
    sandbox = FakeSandbox(outcome=lambda tool, code: ok("x" * 600))
    record = await make_run(loud, sandbox, max_tool_output_bytes=500).run.run()
    assert (record.status, record.reason) == ("stopped", "tool_output_budget")
    assert sandbox.runs == [("python", "a")]
    assert record.steps[0].calls[1].result.error_kind == "budget"
    assert record.usage.tool_output_bytes == 600


async def test_a_zero_tool_output_budget_runs_no_tool() -> None:
    decider = ScriptedDecider(first_then(calls(("python", {"code": "x"})), answer("ok")))
    sandbox = FakeSandbox()
    record = await make_run(decider, sandbox, max_tool_output_bytes=0).run.run()
    assert sandbox.runs == [] and record.reason == "tool_output_budget"


async def test_the_deadline_keeps_time_for_the_summary() -> None:
    slow = ScriptedDecider(lambda conv, n: calls(("python", {"code": f"print({n})"})))
    sandbox = FakeSandbox(delay=0.3)
    started = time.monotonic()
    record = await make_run(slow, sandbox, deadline_seconds=2.0, max_steps=100).run.run()
    elapsed = time.monotonic() - started
    assert (record.status, record.reason) == ("stopped", "deadline")
    assert record.answer.startswith("summary after")
    assert elapsed < 2.0 + 0.3
    # Tool calls never get more time than the work phase has left.
    assert max(sandbox.timeouts) <= 2.0 - 0.5


async def test_a_model_slower_than_the_deadline_ends_the_run_at_it() -> None:
    slow = ScriptedDecider(lambda conv, n: answer("late"), delay=5.0)
    started = time.monotonic()
    record = await make_run(slow, FakeSandbox(), deadline_seconds=1.0).run.run()
    assert time.monotonic() - started < 1.5
    assert (record.status, record.reason) == ("stopped", "deadline")
    assert "summary call failed" in record.detail
    assert record.answer == "The run ended (deadline) before the model gave an answer."


async def test_a_model_failing_mid_run_is_model_error() -> None:
    failing = ScriptedDecider(
        lambda conv, n: calls(("python", {"code": "1"}), prefix=f"f{n}"),
        error=GatewayError("unavailable", "model server at x failed (500)"),
        fail_from_call=1,
    )
    sandbox = FakeSandbox()
    made = make_run(failing, sandbox)
    record = await made.run.run()
    assert (record.status, record.reason) == ("failed", "model_error")
    assert "unavailable: model server at x failed (500)" in record.detail
    assert len(sandbox.runs) == 1 and len(record.steps) == 1
    assert made.events[-1][1]["reason"] == "model_error"


async def test_no_tool_list_means_no_tools_offered() -> None:
    decider = ScriptedDecider(lambda conv, n: answer("from memory"))
    sandbox = FakeSandbox(list_error="the sandbox is unreachable (ConnectError)")
    record = await make_run(decider, sandbox).run.run()
    assert record.tools == [] and "unreachable" in record.tools_error
    assert decider.seen[0].tools == ()
    assert "No tool can be offered now" in decider.seen[0].messages[0].content
    assert record.status == "completed"


async def test_cancelling_the_run_cancels_the_tool_run_in_flight() -> None:
    decider = ScriptedDecider(first_then(calls(("python", {"code": "sleep"})), answer("late")))
    sandbox = FakeSandbox(delay=30)
    made = make_run(decider, sandbox)
    task = asyncio.create_task(made.run.run())
    while not sandbox.runs:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sandbox.cancelled == [("python", "sleep")]
    record = made.record
    assert (record.status, record.reason) == ("cancelled", "cancelled")
    assert made.events[-1] == ("run.completed", made.events[-1][1])
    assert made.events[-1][1]["status"] == "cancelled"


async def test_an_oversized_conversation_ends_the_run() -> None:
    loud = ScriptedDecider(
        lambda conv, n: calls(("python", {"code": "x" * 3000 + str(n)}), prefix=f"b{n}")
    )
    limits = LIMITS.__class__(**{**LIMITS.__dict__, "max_conversation_bytes": 10_000})
    record = await make_run(loud, FakeSandbox(), limits=limits, max_steps=50).run.run()
    assert record.reason == "token_budget" and "conversation reached" in record.detail


def test_stored_arguments_are_the_models_text() -> None:
    decision = calls(("python", {"code": "print('é')"}))
    assert json.loads(decision.tool_calls[0].arguments) == {"code": "print('é')"}


async def test_an_empty_denials_list_says_nothing_to_the_model() -> None:
    sandbox = FakeSandbox(
        outcome=lambda tool, code: ToolOutcome(
            200,
            {
                "tool_status": "ok",
                "result": {"stdout": "1\n", "stderr": "", "exit_code": 0, "denials": []},
            },
        )
    )
    decider = ScriptedDecider(first_then(calls(("python", {"code": "x"})), answer("ok")))
    await make_run(decider, sandbox).run.run()
    [seen] = tool_messages(decider.seen[1])
    assert "denials" not in seen and seen["stdout"] == "1\n"
