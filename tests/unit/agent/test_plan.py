"""POST /api/v1/plan: the gateway's plan, the bff echo, the memory record, and every failure."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from agent.models import PlanRequest
from agent.settings import AgentSettings
from gateway.client import GatewayError
from pagi.auth import TokenVerifier, TrustStore
from pagi.blank import BLANK_CHARACTERS
from testing.fake_downstream import Behaviour, FakeDownstream, closed_port_url
from tests.unit.agent.agent_app import (
    ECHO,
    GATEWAY_TIMEOUT,
    MEMORY,
    REQUEST_TIMEOUT,
    agent_client,
)
from tests.unit.agent.fake_gateway import DEFAULT_STEPS, FakeGateway

PLAN = "/api/v1/plan"


async def test_plan_returns_plan_llm_response_echo_and_stored_record(
    client: httpx.AsyncClient, auth, gateway: FakeGateway, downstream: FakeDownstream
) -> None:
    response = await client.post(
        PLAN, json={"prompt": "Fix the build"}, headers={**auth, "X-Request-Id": "plan-1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["service"] == "agent"
    assert body["status"] == "ok"
    assert body["plan"] == DEFAULT_STEPS
    llm = body["llm_response"]
    assert (llm["model"], llm["backend"], llm["latency_ms"]) == ("fake-planner", "fake", 1.5)
    assert llm["step_count"] == 3 and llm["round_trip_ms"] >= 0
    assert body["bff_echo"] == downstream.behaviours[ECHO].body
    assert body["memory"] == {"record_id": "17", "created_at": "2026-01-01T00:00:00+00:00"}
    assert gateway.prompts == ["Fix the build"]


async def test_echo_and_memory_calls_carry_tokens_request_id_and_the_plan(
    client: httpx.AsyncClient, auth, downstream: FakeDownstream, trust: TrustStore
) -> None:
    await client.post(PLAN, json={"prompt": "Fix it"}, headers={**auth, "X-Request-Id": "plan-2"})
    by_path = {r.path: r for r in downstream.received}
    for path, audience in ((ECHO, "bff"), (MEMORY, "memory")):
        received = by_path[path]
        assert received.headers["x-request-id"] == "plan-2"
        token = received.headers["authorization"].removeprefix("Bearer ")
        assert TokenVerifier(audience, trust).verify(token).subject == "agent"
    assert json.loads(by_path[ECHO].body) == {"ping": "agent", "request_id": "plan-2"}
    stored = json.loads(by_path[MEMORY].body)
    assert stored["kind"] == "plan"
    assert stored["content"]["prompt"] == "Fix it"
    assert stored["content"]["steps"] == DEFAULT_STEPS
    assert stored["content"]["request_id"] == "plan-2"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("unavailable", 502),
        ("deadline_exceeded", 504),
        ("unauthenticated", 502),
        ("permission_denied", 502),
        ("failed_precondition", 502),
        ("internal", 502),
        ("resource_exhausted", 503),
        ("invalid_argument", 400),
    ],
)
async def test_gateway_failures_are_clear_http_errors(
    client: httpx.AsyncClient,
    auth,
    gateway: FakeGateway,
    downstream: FakeDownstream,
    code: str,
    status: int,
) -> None:
    gateway.error = GatewayError(code, "backend said no")
    response = await client.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == f"gateway_{code}"
    assert body["gateway_code"] == code
    assert "backend said no" in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if status == 503:
        assert response.headers["retry-after"] == "1"
    assert downstream.received == [], "no echo or memory write without a plan"


async def test_a_gateway_call_that_never_returns_is_504(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.delay = 30  # a client that ignores its own deadline
    started = time.monotonic()
    response = await client.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 504
    assert response.json()["error"] == "gateway_deadline_exceeded"
    assert time.monotonic() - started < GATEWAY_TIMEOUT + 2


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(status=500, body={"error": "internal_error"}),
        Behaviour(delay=3),
        Behaviour(raw=b"not json"),
    ],
)
async def test_failing_echo_degrades_but_returns_the_plan(
    client: httpx.AsyncClient, auth, downstream: FakeDownstream, behaviour: Behaviour
) -> None:
    downstream.behaviours[ECHO] = behaviour
    response = await client.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["plan"] == DEFAULT_STEPS
    assert body["bff_echo"]["error"].startswith("bff ")
    assert body["memory"]["record_id"] == "17"


async def test_stalled_memory_and_bff_still_let_the_agent_answer_within_its_callers_deadline(
    client: httpx.AsyncClient, auth, downstream: FakeDownstream
) -> None:
    downstream.behaviours[ECHO] = Behaviour(delay=5)
    downstream.behaviours[MEMORY] = Behaviour(delay=5)
    started = time.monotonic()
    body = (await client.post(PLAN, json={"prompt": "x"}, headers=auth)).json()
    elapsed = time.monotonic() - started
    # The bff calls the agent with REQUEST_TIMEOUT_SECONDS: a degraded answer
    # must reach it before that, not a timeout of the agent itself.
    assert elapsed < REQUEST_TIMEOUT, elapsed
    assert body["status"] == "degraded"
    assert body["memory"]["error"] == f"memory did not answer within {REQUEST_TIMEOUT / 2:g}s"
    assert body["bff_echo"]["error"] == f"bff did not answer within {REQUEST_TIMEOUT / 2:g}s"


def test_wiring_deadline_is_half_the_request_timeout_unless_set() -> None:
    assert AgentSettings(_env_file=None, request_timeout_seconds=3).wiring_timeout_seconds == 1.5
    explicit = AgentSettings(
        _env_file=None, request_timeout_seconds=3, pagi_agent_wiring_timeout_seconds=0.2
    )
    assert explicit.wiring_timeout_seconds == 0.2


async def test_failing_memory_degrades_but_returns_the_plan(
    client: httpx.AsyncClient, auth, downstream: FakeDownstream
) -> None:
    downstream.behaviours[MEMORY] = Behaviour(
        status=503, body={"error": "database_unavailable", "detail": "database is locked"}
    )
    body = (await client.post(PLAN, json={"prompt": "x"}, headers=auth)).json()
    assert body["status"] == "degraded"
    assert body["plan"] == DEFAULT_STEPS
    assert body["memory"]["error"] == "memory answered 503"
    assert body["memory"]["detail"] == "database is locked"
    assert body["bff_echo"]["service"] == "bff"


async def test_unreachable_bff_and_memory_degrade_within_the_timeout(
    keys_dir: Path, gateway: FakeGateway, auth
) -> None:
    closed = closed_port_url()
    async with agent_client(keys_dir, gateway, go_bff_url=closed, memory_url=closed) as http:
        started = time.monotonic()
        body = (await http.post(PLAN, json={"prompt": "x"}, headers=auth)).json()
    assert time.monotonic() - started < REQUEST_TIMEOUT + 1
    assert body["status"] == "degraded"
    assert body["bff_echo"]["error"].startswith("bff is unreachable")
    assert body["memory"]["error"].startswith("memory is unreachable")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "   \n\t"},
        {"prompt": "x" * 8193},
        {"prompt": 42},
        {"prompt": None},
        {"prompt": "\x1d\u3000\u2028"},
        {"prompt": "x", "unexpected": 1},
        ["prompt"],
    ],
)
async def test_invalid_prompts_are_422(
    client: httpx.AsyncClient, auth, gateway: FakeGateway, body
) -> None:
    for path in (PLAN, f"{PLAN}/stream"):
        response = await client.post(path, json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
    assert gateway.prompts == []


def test_blank_means_what_the_gateway_strips() -> None:
    every_blank = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(BLANK_CHARACTERS) == every_blank
    for blank in every_blank:
        with pytest.raises(ValidationError):
            PlanRequest(prompt=blank * 3)
        assert PlanRequest(prompt=f"{blank}x{blank}").prompt == f"{blank}x{blank}"


async def test_longest_prompt_is_accepted_and_huge_bodies_are_413(
    client: httpx.AsyncClient, auth
) -> None:
    assert (await client.post(PLAN, json={"prompt": "é" * 8192}, headers=auth)).status_code == 200
    # The longest prompt in its longest JSON spelling (one escaped surrogate pair per character)
    # is still judged on its length, not cut off by the body limit.
    escaped = b'{"prompt": "' + b"\\ud81d\\udf49" * 8192 + b'"}'
    headers = {**auth, "Content-Type": "application/json"}
    assert (await client.post(PLAN, content=escaped, headers=headers)).status_code == 200
    too_long = b'{"prompt": "' + b"\\ud81d\\udf49" * 8193 + b'"}'
    assert (await client.post(PLAN, content=too_long, headers=headers)).status_code == 422
    huge = await client.post(PLAN, json={"prompt": "x" * 200_000}, headers=auth)
    assert huge.status_code == 413
    assert huge.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("path", [PLAN, f"{PLAN}/stream"])
async def test_plan_needs_an_agent_token(
    client: httpx.AsyncClient, token_for, gateway: FakeGateway, path: str
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer x.y.z"},
        {"Authorization": f"Bearer {token_for('bff')}"},
        {"Authorization": f"Bearer {token_for('agent', ttl=1)[:-2]}xx"},
    ):
        response = await client.post(path, json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"
    assert gateway.prompts == []


# ------------------------------------------------------------------ the real gRPC client


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a stalled gateway)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_real_client_gateway_down_is_502(keys_dir: Path, auth) -> None:
    port = int(closed_port_url().rsplit(":", 1)[1])
    closed = closed_port_url()
    async with agent_client(
        keys_dir, None, model_gateway_grpc_port=port, go_bff_url=closed, memory_url=closed
    ) as http:
        response = await http.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "gateway_unavailable"


async def test_real_client_stalled_gateway_is_504(
    keys_dir: Path, auth, silent_listener: int
) -> None:
    closed = closed_port_url()
    async with agent_client(
        keys_dir,
        None,
        model_gateway_grpc_port=silent_listener,
        go_bff_url=closed,
        memory_url=closed,
    ) as http:
        started = time.monotonic()
        response = await http.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 504, response.text
    assert response.json()["error"] == "gateway_deadline_exceeded"
    assert time.monotonic() - started < GATEWAY_TIMEOUT + 2


async def test_a_broken_gateway_client_is_502_not_500(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.error = RuntimeError("bug in the client")  # type: ignore[assignment]
    response = await client.post(PLAN, json={"prompt": "x"}, headers=auth)
    assert response.status_code == 502
    assert response.json()["error"] == "gateway_internal"
    assert "bug in the client" not in response.text


# ------------------------------------------------------------------ the caller's budget


async def test_a_stalled_gateway_is_a_504_before_the_callers_budget_runs_out(
    client: httpx.AsyncClient, auth, gateway: FakeGateway
) -> None:
    gateway.delay = 30
    started = time.monotonic()
    response = await client.post(
        PLAN, json={"prompt": "x"}, headers={**auth, "X-Request-Timeout-Ms": "1000"}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "gateway_deadline_exceeded"
    assert "model gateway" in response.json()["detail"]
    assert elapsed < 1.0, elapsed


async def test_stalled_follow_up_calls_fit_in_the_callers_budget(
    keys_dir: Path,
    gateway: FakeGateway,
    auth,
    downstream: FakeDownstream,
    downstream_server: tuple[FakeDownstream, str],
) -> None:
    downstream.behaviours[ECHO] = Behaviour(delay=5)
    downstream.behaviours[MEMORY] = Behaviour(delay=5)
    _, url = downstream_server
    # Left alone, the follow-up calls would wait 3 s: the caller's 1 s budget wins.
    async with agent_client(
        keys_dir, gateway, go_bff_url=url, memory_url=url, pagi_agent_wiring_timeout_seconds=3
    ) as http:
        started = time.monotonic()
        response = await http.post(
            PLAN, json={"prompt": "x"}, headers={**auth, "X-Request-Timeout-Ms": "1000"}
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    assert response.json()["status"] == "degraded"


async def test_a_budget_too_small_for_any_plan_counts_as_one_second(
    client: httpx.AsyncClient, auth
) -> None:
    response = await client.post(
        PLAN, json={"prompt": "x"}, headers={**auth, "X-Request-Timeout-Ms": "1"}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("budget", ["0", "-5", "abc", "600001", "1.5", "null"])
async def test_an_invalid_budget_is_422(client: httpx.AsyncClient, auth, budget: str) -> None:
    response = await client.post(
        PLAN, json={"prompt": "x"}, headers={**auth, "X-Request-Timeout-Ms": budget}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
