"""The agent's sandbox calls: every way the sandbox can fail is an outcome, never an exception."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from agent.observations import cap_text
from agent.sandbox_calls import InputFile, SandboxCalls, ToolListUnavailable, ToolRequest

RESULT = {
    "tool_status": "ok",
    "result": {"stdout": "hi\n", "stderr": "", "exit_code": 0, "duration_ms": 3.0},
}


def calls_answering(handler) -> SandboxCalls:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://sandbox")
    return SandboxCalls(client)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "words"),
    [
        (
            403,
            {"error": "forbidden", "detail": "caller 'agent' may not run tool 'x'"},
            {},
            "policy",
            "may not run",
        ),
        (404, {"error": "unknown_tool", "detail": "no tool named 'x'"}, {}, "rejected", "no tool"),
        (413, {"error": "payload_too_large", "detail": "code too large"}, {}, "rejected", "large"),
        (
            429,
            {"error": "too_many_requests", "detail": "queue full"},
            {"Retry-After": "3"},
            "busy",
            "retry after 3 s",
        ),
        (
            503,
            {"error": "isolation_unavailable", "detail": "seccomp missing"},
            {},
            "unavailable",
            "seccomp missing",
        ),
        (500, {"error": "internal_error"}, {}, "unavailable", "answered 500"),
        (200, {"unexpected": True}, {}, "unavailable", "not a result"),
        (200, "not json", {}, "unavailable", "not a result"),
    ],
)
async def test_refusals_and_failures_become_outcomes(status, body, headers, kind, words) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    outcome = await calls_answering(handler).run(ToolRequest("python", "print(1)"), 2.0)
    assert outcome.error_kind == kind and words in outcome.error, outcome


async def test_a_result_is_passed_on_with_its_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=RESULT)

    outcome = await calls_answering(handler).run(ToolRequest("python", "print(1)"), 2.0)
    assert outcome.error is None and outcome.body == RESULT and outcome.status == 200
    assert json.loads(seen[0].content) == {"tool_name": "python", "code": "print(1)"}
    without = await calls_answering(handler).run(ToolRequest("demo"), 2.0)
    assert without.error is None and json.loads(seen[1].content) == {"tool_name": "demo"}


async def test_a_sandbox_down_or_silent_is_an_outcome() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    down = await calls_answering(refuse).run(ToolRequest("python", "1"), 2.0)
    assert down.error_kind == "unavailable" and "unreachable" in down.error

    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=RESULT)

    silent = await calls_answering(stall).run(ToolRequest("python", "1"), 0.2)
    assert silent.error_kind == "timeout" and "within 0.2s" in silent.error


async def test_the_tool_list_and_its_failures() -> None:
    listed = {
        "caller": "agent",
        "policy_version": "v",
        "tools": [
            {"name": "python", "description": "Py", "takes_code": True, "max_code_bytes": 10},
            {"name": "broken"},  # no takes_code: skipped, not a crash
        ],
    }
    tools = await calls_answering(lambda r: httpx.Response(200, json=listed)).list_tools(1.0)
    assert [(t.name, t.takes_code, t.max_code_bytes) for t in tools] == [("python", True, 10)]
    for handler in (
        lambda r: httpx.Response(401, json={"error": "unauthorized", "detail": "bad token"}),
        lambda r: httpx.Response(200, content=b"[]"),
    ):
        with pytest.raises(ToolListUnavailable):
            await calls_answering(handler).list_tools(1.0)


def test_cap_text_keeps_head_and_tail_within_the_limit() -> None:
    assert cap_text("short", 100) == ("short", False)
    text = "h" * 1000 + "é" * 1000 + "t" * 1000
    capped, cut = cap_text(text, 512)
    assert cut and len(capped.encode()) <= 512
    assert capped.startswith("hhh") and capped.endswith("ttt") and "bytes cut" in capped


async def test_input_files_go_as_base64_and_the_tool_list_says_what_takes_files() -> None:
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/tools":
            tool = {"name": "python-data", "takes_code": True, "max_code_bytes": 10}
            tool |= {"input_files": 4, "input_bytes": 2048, "output_files": 16}
            return httpx.Response(200, json={"tools": [tool]})
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=RESULT)

    sandbox = calls_answering(handler)
    [tool] = await sandbox.list_tools(1.0)
    assert (tool.input_files, tool.input_bytes, tool.output_files) == (4, 2048, 16)
    outcome = await sandbox.run(
        ToolRequest("python-data", "x", (InputFile("d/a.csv", b"a,b\n"),)), 1.0
    )
    assert outcome.error is None
    assert sent[0]["files"] == [{"path": "d/a.csv", "content": "YSxiCg=="}]
