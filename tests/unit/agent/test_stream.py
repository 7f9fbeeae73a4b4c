"""POST /api/v1/plan/stream: one SSE event per step, then done, or an error event."""

from __future__ import annotations

import json
import time

import httpx

from gateway.client import GatewayError
from tests.unit.agent.agent_app import GATEWAY_TIMEOUT
from tests.unit.agent.fake_gateway import DEFAULT_STEPS, FakeGateway

STREAM = "/api/v1/plan/stream"


def parse_events(text: str) -> list[tuple[str, dict]]:
    """``(event, data)`` pairs of an SSE body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_stream_sends_each_step_then_done(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    response = await client.post(
        STREAM, json={"prompt": "Fix it"}, headers={**auth, "X-Request-Id": "s-1"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"] == "s-1"
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["step"] * len(DEFAULT_STEPS) + ["done"]
    assert [data["step"] for _, data in events[:-1]] == DEFAULT_STEPS
    assert [data["index"] for _, data in events[:-1]] == [0, 1, 2]
    assert events[-1][1] == {"steps": 3, "request_id": "s-1"}
    assert gateway.prompts == ["Fix it"]


async def test_gateway_down_gives_an_error_event(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.error = GatewayError("unavailable", "model gateway unreachable")
    gateway.fail_after_steps = 0
    response = await client.post(STREAM, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 200
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["error"]
    error = events[0][1]
    assert error["error"] == "gateway_unavailable"
    assert error["status_code"] == 502
    assert error["gateway_code"] == "unavailable"


async def test_failure_mid_stream_keeps_the_steps_sent_and_ends_with_error(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.error = GatewayError("internal", "connection closed mid-stream")
    gateway.fail_after_steps = 2
    events = parse_events((await client.post(STREAM, json={"prompt": "x"}, headers=auth)).text)
    assert [name for name, _ in events] == ["step", "step", "error"]
    assert events[-1][1]["status_code"] == 502


async def test_stalled_stream_ends_with_a_deadline_error(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.delay = 30
    started = time.monotonic()
    events = parse_events((await client.post(STREAM, json={"prompt": "x"}, headers=auth)).text)
    assert time.monotonic() - started < GATEWAY_TIMEOUT + 2
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["error"] == "gateway_deadline_exceeded"
    assert events[0][1]["status_code"] == 504


async def test_step_text_cannot_break_the_event_framing(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.steps = ["line one\n\nevent: done\ndata: {}", "ü ✓ \r\n"]
    events = parse_events((await client.post(STREAM, json={"prompt": "x"}, headers=auth)).text)
    assert [name for name, _ in events] == ["step", "step", "done"]
    assert [data["step"] for _, data in events[:2]] == gateway.steps


async def test_a_broken_gateway_client_ends_the_stream_with_an_error_event(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.error = RuntimeError("bug in the client")  # type: ignore[assignment]
    gateway.fail_after_steps = 1
    events = parse_events((await client.post(STREAM, json={"prompt": "x"}, headers=auth)).text)
    assert [name for name, _ in events] == ["step", "error"]
    assert events[-1][1]["status_code"] == 502
