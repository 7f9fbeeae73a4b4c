"""dashboard-data: three downstream calls at once, each failure contained and named."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from bff.app import create_app
from bff.fanout import MAX_ANSWER_BYTES
from bff.settings import BffSettings
from pagi.auth import TokenVerifier, TrustStore
from testing.fake_downstream import Behaviour, FakeDownstream, closed_port_url

TIMEOUT = 0.5
PLAN = "/api/v1/plan"
EXECUTE = "/api/v1/execute_tool"
LATEST = "/memory/latest"
RUNS = "/memory/runs"
RUN_LIST = {
    "service": "memory",
    "count": 1,
    "runs": [
        {
            "id": "run_1",
            "status": "completed",
            "summary": {"goal": "add", "reason": "completed", "steps": 2, "answer": "4"},
            "created_at": "2026-01-01T00:00:00+00:00",
            "updated_at": "2026-01-01T00:00:01+00:00",
        }
    ],
}
DASHBOARD = "/api/v1/agi/dashboard-data"


@pytest.fixture
def fake(fake_server: tuple[FakeDownstream, str]) -> FakeDownstream:
    server, _ = fake_server
    server.behaviours = {
        PLAN: Behaviour(body={"service": "agent", "status": "ok", "plan": ["a", "b"]}),
        EXECUTE: Behaviour(body={"tool_status": "ok", "result": {"stdout": "hi\n"}}),
        LATEST: Behaviour(body={"service": "memory", "record": None}),
        RUNS: Behaviour(body=RUN_LIST),
    }
    server.received = []
    return server


@asynccontextmanager
async def bff_client(keys_dir: Path, **urls: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = BffSettings(
        _env_file=None, pagi_keys_dir=keys_dir, request_timeout_seconds=TIMEOUT, **urls
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bff") as http:
            yield http


@pytest.fixture
async def client(
    keys_dir: Path, fake_server: tuple[FakeDownstream, str]
) -> AsyncIterator[httpx.AsyncClient]:
    _, url = fake_server
    async with bff_client(keys_dir, py_agent_url=url, rust_sandbox_url=url, memory_url=url) as http:
        yield http


async def test_all_ok_aggregates_every_answer(
    client: httpx.AsyncClient, fake: FakeDownstream, trust: TrustStore
) -> None:
    response = await client.get(DASHBOARD, headers={"X-Request-Id": "dash-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "bff"
    assert body["status"] == "ok"
    assert body["request_id"] == "dash-1"
    assert body["failed_services"] == []
    assert body["data"] == {
        "python_agent": fake.behaviours[PLAN].body,
        "rust_sandbox": fake.behaviours[EXECUTE].body,
        "memory": fake.behaviours[LATEST].body,
    }
    assert set(body["timings_ms"]) == {"python_agent", "rust_sandbox", "memory"}
    assert body["latest_run"] == {
        "id": "run_1",
        "status": "completed",
        "goal": "add",
        "reason": "completed",
        "steps": 2,
        "answer": "4",
    }


async def test_latest_run_is_null_without_runs_and_an_error_when_memory_fails(
    client: httpx.AsyncClient, fake: FakeDownstream
) -> None:
    fake.behaviours[RUNS] = Behaviour(body={"service": "memory", "count": 0, "runs": []})
    body = (await client.get(DASHBOARD)).json()
    assert body["latest_run"] is None and body["status"] == "ok"
    fake.behaviours[RUNS] = Behaviour(status=503, body={"error": "database_unavailable"})
    body = (await client.get(DASHBOARD)).json()
    # The contract's three entries decide the status; the run summary says what failed.
    assert body["status"] == "ok" and body["failed_services"] == []
    assert body["latest_run"]["error"] == "memory answered 503"
    assert set(body["data"]) == {"python_agent", "rust_sandbox", "memory"}


async def test_each_call_carries_a_token_for_its_target_the_request_id_and_the_budget(
    client: httpx.AsyncClient, fake: FakeDownstream, trust: TrustStore
) -> None:
    await client.get(DASHBOARD, headers={"X-Request-Id": "dash-2"})
    by_path = {r.path: r for r in fake.received}
    assert set(by_path) == {PLAN, EXECUTE, LATEST, RUNS}
    for path, audience in (
        (PLAN, "agent"),
        (EXECUTE, "sandbox"),
        (LATEST, "memory"),
        (RUNS, "memory"),
    ):
        received = by_path[path]
        assert received.headers["x-request-id"] == "dash-2"
        token = received.headers["authorization"].removeprefix("Bearer ")
        assert TokenVerifier(audience, trust).verify(token).subject == "bff"
        assert received.headers["x-request-timeout-ms"] == str(int(TIMEOUT * 1000))
    assert by_path[EXECUTE].body == b'{"tool_name":"demo"}'
    assert by_path[PLAN].method == "POST" and b'"prompt"' in by_path[PLAN].body
    assert by_path[LATEST].method == "GET"


async def test_calls_run_concurrently(client: httpx.AsyncClient, fake: FakeDownstream) -> None:
    delay = 0.3
    for behaviour in fake.behaviours.values():
        behaviour.delay = delay
    started = time.monotonic()
    body = (await client.get(DASHBOARD)).json()
    elapsed = time.monotonic() - started
    assert body["status"] == "ok", body
    # Sequential calls would take 3 x delay; concurrent ones about one delay.
    assert elapsed < 2 * delay, elapsed
    assert all(t >= delay * 1000 for t in body["timings_ms"].values())


async def test_a_slow_downstream_is_cut_at_the_timeout_and_named(
    client: httpx.AsyncClient, fake: FakeDownstream
) -> None:
    fake.behaviours[EXECUTE].delay = 5.0
    started = time.monotonic()
    response = await client.get(DASHBOARD)
    elapsed = time.monotonic() - started
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["failed_services"] == ["sandbox"]
    assert body["data"]["rust_sandbox"]["error"] == f"sandbox did not answer within {TIMEOUT:g}s"
    assert body["data"]["python_agent"] == fake.behaviours[PLAN].body
    assert body["data"]["memory"] == fake.behaviours[LATEST].body
    assert elapsed < TIMEOUT + 1.0, elapsed


@pytest.mark.parametrize(
    ("behaviour", "expected_error"),
    [
        (
            Behaviour(status=500, body={"error": "internal_error", "detail": "boom"}),
            "memory answered 500",
        ),
        (Behaviour(status=401, body={"error": "unauthorized"}), "memory answered 401"),
        (
            Behaviour(raw=b"<html>not json</html>"),
            "memory answered something that is not a JSON object",
        ),
        (Behaviour(body=[1, 2, 3]), "memory answered something that is not a JSON object"),
    ],
)
async def test_a_failing_downstream_is_named_and_the_rest_returned(
    client: httpx.AsyncClient, fake: FakeDownstream, behaviour: Behaviour, expected_error: str
) -> None:
    fake.behaviours[LATEST] = behaviour
    body = (await client.get(DASHBOARD)).json()
    assert body["status"] == "degraded"
    assert body["failed_services"] == ["memory"]
    assert body["data"]["memory"]["error"] == expected_error
    assert body["data"]["memory"]["service"] == "memory"
    assert "error" not in body["data"]["python_agent"]
    assert "error" not in body["data"]["rust_sandbox"]


async def test_an_unreachable_downstream_is_named(
    keys_dir: Path, fake: FakeDownstream, fake_server: tuple[FakeDownstream, str]
) -> None:
    _, url = fake_server
    async with bff_client(
        keys_dir, py_agent_url=closed_port_url(), rust_sandbox_url=url, memory_url=url
    ) as http:
        body = (await http.get(DASHBOARD)).json()
    assert body["status"] == "degraded"
    assert body["failed_services"] == ["agent"]
    assert body["data"]["python_agent"]["error"].startswith("agent is unreachable")
    assert body["data"]["rust_sandbox"] == fake.behaviours[EXECUTE].body


async def test_a_degraded_plan_degrades_the_dashboard(
    client: httpx.AsyncClient, fake: FakeDownstream
) -> None:
    fake.behaviours[PLAN].body = {"service": "agent", "status": "degraded", "plan": ["a"]}
    body = (await client.get(DASHBOARD)).json()
    assert body["status"] == "degraded"
    assert body["failed_services"] == []


async def test_dashboard_is_open_unless_configured_to_need_a_token(
    keys_dir: Path, fake: FakeDownstream, fake_server: tuple[FakeDownstream, str], token_for
) -> None:
    _, url = fake_server
    urls = {"py_agent_url": url, "rust_sandbox_url": url, "memory_url": url}
    settings = BffSettings(
        _env_file=None, pagi_keys_dir=keys_dir, pagi_bff_dashboard_require_token=True, **urls
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bff") as http:
            refused = await http.get(DASHBOARD)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            wrong = await http.get(
                DASHBOARD, headers={"Authorization": f"Bearer {token_for('agent')}"}
            )
            assert wrong.status_code == 401
            assert fake.received == [], "no downstream call before the token is checked"
            allowed = await http.get(
                DASHBOARD, headers={"Authorization": f"Bearer {token_for('bff')}"}
            )
            assert allowed.status_code == 200
            assert allowed.json()["status"] == "ok"


async def test_an_oversized_answer_is_refused_not_buffered(
    client: httpx.AsyncClient, fake: FakeDownstream
) -> None:
    fake.behaviours[EXECUTE] = Behaviour(raw=b"[" + b"1," * MAX_ANSWER_BYTES + b"1]")
    body = (await client.get(DASHBOARD)).json()
    assert body["failed_services"] == ["sandbox"]
    assert body["data"]["rust_sandbox"]["error"] == (
        f"sandbox answered more than {MAX_ANSWER_BYTES} bytes"
    )


@pytest.fixture
def truncating_server() -> Iterator[str]:
    """Answers every connection with half a response, then hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half')

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()


async def test_a_connection_dropped_mid_answer_is_named(
    keys_dir: Path,
    fake: FakeDownstream,
    fake_server: tuple[FakeDownstream, str],
    truncating_server: str,
) -> None:
    _, url = fake_server
    async with bff_client(
        keys_dir, py_agent_url=url, rust_sandbox_url=url, memory_url=truncating_server
    ) as http:
        body = (await http.get(DASHBOARD)).json()
    assert body["failed_services"] == ["memory"]
    assert body["data"]["memory"]["error"] == "the call to memory failed (RemoteProtocolError)"
    assert body["data"]["python_agent"] == fake.behaviours[PLAN].body
