"""The console's charts: rates and latency quantiles from consecutive metric readings."""

from __future__ import annotations

import pytest

from bff.console import charts
from bff.console.charts import ChartHistory, quantile, read_agent, read_sandbox

BUCKET = 'pagi_http_request_duration_seconds_bucket{method="POST",route="/api/v1/execute_tool"'
SANDBOX = f"""
pagi_sandbox_tool_runs_total{{tool="python",outcome="ok"}} {{ok_python}}
pagi_sandbox_tool_runs_total{{tool="demo",outcome="ok"}} 1
pagi_sandbox_tool_runs_total{{tool="python",outcome="error"}} {{errors}}
{BUCKET},le="0.005"}} {{fast}}
{BUCKET},le="0.01"}} {{mid}}
{BUCKET},le="+Inf"}} {{all}}
pagi_http_request_duration_seconds_bucket{{method="GET",route="/health",le="+Inf"}} 99
pagi_sandbox_queue_depth 3
pagi_sandbox_runs_in_progress 4
"""
AGENT = 'pagi_agent_runs_total{status="completed",reason="completed"} %d\n'


def sandbox_text(ok_python: int, errors: int, fast: int, mid: int, total: int) -> str:
    return (
        SANDBOX.replace("{ok_python}", str(ok_python))
        .replace("{errors}", str(errors))
        .replace("{fast}", str(fast))
        .replace("{mid}", str(mid))
        .replace("{all}", str(total))
    )


def test_readings_sum_tools_by_outcome_and_keep_only_execute_tool_latency() -> None:
    found = read_sandbox(sandbox_text(5, 2, 1, 2, 3))
    assert found["tool_runs"] == {"ok": 6.0, "error": 2.0}
    assert found["latency_buckets"] == {0.005: 1.0, 0.01: 2.0, float("inf"): 3.0}
    assert (found["queued"], found["running"]) == (3.0, 4.0)
    assert read_agent(AGENT % 7) == {"completed": 7.0}


def test_quantiles_interpolate_within_the_bucket_of_the_interval() -> None:
    before = {0.005: 10.0, 0.01: 10.0, float("inf"): 10.0}
    after = {0.005: 14.0, 0.01: 18.0, float("inf"): 18.0}  # 4 fast, 4 mid in between
    assert quantile(0.5, before, after) == pytest.approx(0.005)
    assert quantile(0.75, before, after) == pytest.approx(0.0075)
    assert quantile(0.5, after, after) is None  # nothing happened


async def test_series_are_rates_per_minute_between_readings(monkeypatch) -> None:
    texts = iter(
        [
            (sandbox_text(0, 0, 0, 0, 0), AGENT % 0),
            (sandbox_text(10, 5, 15, 15, 15), AGENT % 2),
            (None, AGENT % 4),  # the sandbox could not be read
        ]
    )
    clock = iter([1000.0, 1030.0, 1060.0])
    monkeypatch.setattr(charts.time, "time", lambda: next(clock))
    current: dict[str, str | None] = {}

    async def source(service: str) -> str | None:
        return current[service]

    history = ChartHistory(source)
    for sandbox, agent in texts:
        current.update(sandbox=sandbox, agent=agent)
        await history.refresh()
    series = history.series()
    assert series.times == [1030.0, 1060.0]
    assert series.tool_runs_per_minute["ok"] == [pytest.approx(20.0), None]  # 10 in 30 s
    assert series.tool_runs_per_minute["error"] == [pytest.approx(10.0), None]
    assert series.agent_runs_per_minute["completed"] == [4.0, 4.0]
    assert series.execute_tool_ms["p50"][0] == pytest.approx(2.5)
    assert series.queue == {"queued": [3.0, None], "running": [4.0, None]}
    assert series.unreadable == ["sandbox"]


async def test_a_fresh_reading_is_not_taken_again(monkeypatch) -> None:
    calls = []

    async def source(service: str) -> str | None:
        calls.append(service)
        return ""

    monkeypatch.setattr(charts.time, "time", lambda: 500.0)
    history = ChartHistory(source)
    await history.refresh()
    await history.refresh()
    assert sorted(calls) == ["agent", "sandbox"]
