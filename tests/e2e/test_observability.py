"""Metrics, traces and run visibility against the whole stack as processes on loopback.

The stack exports its traces to a small OTLP receiver on loopback; one
agent run started through the bff must make one trace that spans the five
services. Every service's ``/metrics`` must tell what the traffic did.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagi import SERVICES
from pagi.stack import Stack
from testing.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from testing.stack import launch_stack, stack_env

pytestmark = pytest.mark.e2e

GOAL = "Compute it.\n```python\nprint(6 * 7)\n```"
TRACED_REQUEST_ID = "trace-e2e-1"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, receiver: OtlpReceiver
) -> Iterator[Stack]:
    env = stack_env(
        tmp_path_factory.mktemp("observed"),
        keys_dir,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    running = launch_stack(env)
    yield running
    running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stream_run(stack: Stack, token: str, goal: str, request_id: str) -> list[tuple[str, dict]]:
    """Start a run through the bff and read its events to the end."""
    response = httpx.post(
        f"{stack.settings.url_of('bff')}/api/v1/agi/runs/stream",
        json={"goal": goal},
        headers={**bearer(token), "X-Request-Id": request_id},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    assert events[-1][0] == "run.completed", events
    return events


# --------------------------------------------------------------------------- traces


def test_one_run_through_the_bff_is_one_trace_across_all_five_services(
    stack: Stack, receiver: OtlpReceiver, token_for: Callable[..., str]
) -> None:
    stream_run(stack, token_for("bff"), GOAL, TRACED_REQUEST_ID)

    def entry_trace(spans: list[ReceivedSpan]) -> str | None:
        for span in spans:
            if (
                span.service == "bff"
                and span.kind == "server"
                and span.attributes.get("pagi.request_id") == TRACED_REQUEST_ID
            ):
                return span.trace_id
        return None

    def whole(spans: list[ReceivedSpan]) -> bool:
        trace_id = entry_trace(spans)
        services = {s.service for s in spans if s.trace_id == trace_id}
        return trace_id is not None and services >= set(SERVICES)

    def roots_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        trace_id = entry_trace(spans)
        mine = [s for s in spans if s.trace_id == trace_id]
        by_id = {s.span_id for s in mine}
        return [s for s in mine if s.parent_span_id not in by_id]

    spans = receiver.wait_for(whole)
    # Each service exports in batches of its own: a callee's span can arrive
    # before its caller's. Give the callers a moment before judging the tree.
    with contextlib.suppress(AssertionError):
        spans = receiver.wait_for(lambda spans: len(roots_of(spans)) == 1, timeout=10.0)
    trace_id = entry_trace(spans)
    mine = [s for s in spans if s.trace_id == trace_id]
    # Every span but the bff's entry has its parent in the same trace: one tree.
    roots = roots_of(spans)
    assert [(r.service, r.kind) for r in roots] == [("bff", "server")], roots
    servers = {(s.service, s.name) for s in mine if s.kind == "server"}
    assert ("bff", "POST /api/v1/agi/runs/stream") in servers
    assert ("agent", "POST /api/v1/runs/stream") in servers
    assert ("sandbox", "POST /api/v1/execute_tool") in servers
    assert ("memory", "PUT /memory/runs/{run_id}") in servers
    assert ("gateway", "/pagi.gateway.v1.ModelGateway/Decide") in servers
    # The request id is on the server spans of every service it reached.
    for service in SERVICES:
        ids = {
            s.attributes.get("pagi.request_id")
            for s in mine
            if s.service == service and s.kind == "server"
        }
        assert ids == {TRACED_REQUEST_ID}, (service, ids)
    # Probes and scrapes make no spans.
    assert not any(s.attributes.get("url.path") in ("/health", "/metrics") for s in spans)


# --------------------------------------------------------------------------- metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def total(values: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in values.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def test_every_service_serves_metrics_that_follow_the_traffic(
    stack: Stack, token_for: Callable[..., str]
) -> None:
    stream_run(stack, token_for("bff"), GOAL, "metrics-e2e-1")
    settings = stack.settings
    gateway_port = stack.env["PAGI_GATEWAY_METRICS_PORT"]
    figures = {
        name: scrape(settings.url_of(name)) for name in ("agent", "sandbox", "bff", "memory")
    }
    figures["gateway"] = scrape(f"http://127.0.0.1:{gateway_port}")

    bff = figures["bff"]
    assert (
        total(bff, "pagi_http_requests_total", route="/api/v1/agi/runs/stream", status="200") >= 1
    )
    sandbox = figures["sandbox"]
    assert total(sandbox, "pagi_sandbox_tool_runs_total", tool="python", outcome="ok") >= 1
    assert total(sandbox, "pagi_sandbox_warm_path_state", state="ready") == 1
    assert total(sandbox, "pagi_sandbox_isolation_layer_active", layer="seccomp") == 1
    assert total(sandbox, "pagi_sandbox_tool_run_duration_seconds_count", tool="python") >= 1
    agent = figures["agent"]
    assert total(agent, "pagi_agent_runs_total", status="completed", reason="completed") >= 1
    assert total(agent, "pagi_agent_run_steps_count") >= 1
    assert total(agent, "pagi_agent_tool_calls_total", outcome="ok") >= 1
    memory = figures["memory"]
    assert total(memory, "pagi_http_requests_total", route="/memory/runs/{run_id}") >= 1
    gateway = figures["gateway"]
    assert total(gateway, "pagi_gateway_model_calls_total", backend="local", outcome="ok") >= 1
    assert total(gateway, "pagi_gateway_model_tokens_total", kind="prompt") > 0
    assert (
        total(gateway, "pagi_grpc_requests_total", method="/pagi.gateway.v1.ModelGateway/Decide")
        >= 1
    )
    for name, values in figures.items():
        assert total(values, "process_cpu_seconds_total") > 0, name
        # No label holds a raw path, a goal or a run id.
        labels = " ".join(str(key[1]) for key in values)
        assert not re.search(r"run_[0-9a-f]{32}", labels) and "6 * 7" not in labels, name


# --------------------------------------------------------------------------- run visibility


def test_runs_are_visible_to_whoever_started_them_and_to_operators(
    stack: Stack, token_for: Callable[..., str]
) -> None:
    agent_url = stack.settings.url_of("agent")

    def run_as(caller: str) -> dict:
        answer = httpx.post(
            f"{agent_url}/api/v1/runs",
            json={"goal": GOAL},
            headers=bearer(token_for("agent", sub=caller)),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["run"]

    mine, theirs = run_as("bff"), run_as("sandbox")
    assert mine["caller"] == "bff" and theirs["caller"] == "sandbox"

    def listed(token: str) -> set[str]:
        answer = httpx.get(
            f"{agent_url}/api/v1/runs", params={"limit": 100}, headers=bearer(token), timeout=10
        )
        assert answer.status_code == 200, answer.text
        return {run["id"] for run in answer.json()["runs"]}

    bff_sees = listed(token_for("agent", sub="bff"))
    assert mine["id"] in bff_sees and theirs["id"] not in bff_sees
    operator_sees = listed(token_for("agent"))
    assert {mine["id"], theirs["id"]} <= operator_sees

    def fetch(run_id: str, token: str) -> httpx.Response:
        return httpx.get(f"{agent_url}/api/v1/runs/{run_id}", headers=bearer(token), timeout=10)

    assert fetch(mine["id"], token_for("agent", sub="bff")).status_code == 200
    hidden = fetch(theirs["id"], token_for("agent", sub="bff"))
    assert hidden.status_code == 404 and hidden.json()["error"] == "run_not_found"
    assert fetch(theirs["id"], token_for("agent")).status_code == 200
