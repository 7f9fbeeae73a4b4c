"""The console's charts: runs per minute, execute_tool latency and queue depth, over time.

While a console is open the bff reads the sandbox's and the agent's
``/metrics`` (at most every :data:`SAMPLE_EVERY_SECONDS`, whichever console
asks) and keeps the last :data:`KEPT_SAMPLES` readings; the charts are the
differences between consecutive readings. Nothing is sampled while no
console asks, so the charts start when the first console opens.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

SAMPLE_EVERY_SECONDS = 5.0
KEPT_SAMPLES = 121
"""Ten minutes of intervals at one reading every five seconds."""
EXECUTE_TOOL_ROUTE = "/api/v1/execute_tool"

MetricsSource = Callable[[str], Awaitable[str | None]]
"""``source(service)``: that service's ``/metrics`` text, or None when it could not be read."""


@dataclass(frozen=True)
class Reading:
    """What one reading of the two services' metrics found (None: not read)."""

    at: float
    tool_runs: dict[str, float] | None = None
    agent_runs: dict[str, float] | None = None
    latency_buckets: dict[float, float] | None = None
    queued: float | None = None
    running: float | None = None


def read_sandbox(text: str) -> dict[str, object]:
    """Tool runs by outcome, execute_tool's latency buckets, and the queue, from its metrics."""
    runs: dict[str, float] = {}
    buckets: dict[float, float] = {}
    found: dict[str, object] = {"tool_runs": runs, "latency_buckets": buckets}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "pagi_sandbox_tool_runs_total":
                outcome = labels.get("outcome", "?")
                runs[outcome] = runs.get(outcome, 0.0) + sample.value
            elif (
                sample.name == "pagi_http_request_duration_seconds_bucket"
                and labels.get("route") == EXECUTE_TOOL_ROUTE
                and labels.get("method") == "POST"
            ):
                buckets[float(labels["le"])] = sample.value
            elif sample.name == "pagi_sandbox_queue_depth":
                found["queued"] = sample.value
            elif sample.name == "pagi_sandbox_runs_in_progress":
                found["running"] = sample.value
    return found


def read_agent(text: str) -> dict[str, float]:
    """Agent runs that ended, by status, from its metrics."""
    runs: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pagi_agent_runs_total":
                status = sample.labels.get("status", "?")
                runs[status] = runs.get(status, 0.0) + sample.value
    return runs


def _increase(before: float, after: float) -> float:
    return after - before if after >= before else after  # a restart counts from zero


def quantile(
    fraction: float, before: dict[float, float], after: dict[float, float]
) -> float | None:
    """The ``fraction`` quantile (seconds) of what fell in the buckets between two readings."""
    bounds = sorted(after)
    counts = [_increase(before.get(le, 0.0), after[le]) for le in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = fraction * counts[-1]
    lower, below = 0.0, 0.0
    for le, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, cumulative
    return lower


class ChartSeries(BaseModel):
    """``GET /console/api/charts``: one point per interval between readings."""

    times: list[float] = Field(description="Each interval's end, Unix seconds.")
    tool_runs_per_minute: dict[str, list[float | None]] = Field(description="By outcome.")
    agent_runs_per_minute: dict[str, list[float | None]] = Field(description="By status.")
    execute_tool_ms: dict[str, list[float | None]] = Field(
        description="p50 and p95 of execute_tool over each interval (null: no call)."
    )
    queue: dict[str, list[float | None]] = Field(description="queued and running, at each end.")
    unreadable: list[str] = Field(description="Services whose metrics the last reading missed.")


@dataclass
class ChartHistory:
    """The kept readings; :meth:`refresh` takes a new one when the last is old enough."""

    source: MetricsSource
    readings: deque[Reading] = field(default_factory=lambda: deque(maxlen=KEPT_SAMPLES))
    unreadable: list[str] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self) -> None:
        """Read the services' metrics unless a reading is fresh."""
        async with self._lock:
            now = time.time()
            if self.readings and now - self.readings[-1].at < SAMPLE_EVERY_SECONDS:
                return
            sandbox_text, agent_text = await asyncio.gather(
                self.source("sandbox"), self.source("agent")
            )
            values: dict[str, object] = {}
            if sandbox_text is not None:
                values.update(read_sandbox(sandbox_text))
            if agent_text is not None:
                values["agent_runs"] = read_agent(agent_text)
            self.unreadable = [
                name
                for name, text in (("sandbox", sandbox_text), ("agent", agent_text))
                if text is None
            ]
            self.readings.append(Reading(at=now, **values))  # type: ignore[arg-type]

    def series(self) -> ChartSeries:
        """The charts' points from the kept readings."""
        pairs = list(zip(list(self.readings)[:-1], list(self.readings)[1:], strict=True))
        tools = _rates([(a.tool_runs, b.tool_runs, b.at - a.at) for a, b in pairs])
        agents = _rates([(a.agent_runs, b.agent_runs, b.at - a.at) for a, b in pairs])
        latency: dict[str, list[float | None]] = {"p50": [], "p95": []}
        for a, b in pairs:
            for name, fraction in (("p50", 0.5), ("p95", 0.95)):
                value = None
                if a.latency_buckets is not None and b.latency_buckets is not None:
                    seconds = quantile(fraction, a.latency_buckets, b.latency_buckets)
                    value = None if seconds is None else round(seconds * 1000, 3)
                latency[name].append(value)
        return ChartSeries(
            times=[round(b.at, 3) for _, b in pairs],
            tool_runs_per_minute=tools,
            agent_runs_per_minute=agents,
            execute_tool_ms=latency,
            queue={
                "queued": [b.queued for _, b in pairs],
                "running": [b.running for _, b in pairs],
            },
            unreadable=self.unreadable,
        )


def _rates(
    intervals: list[tuple[dict[str, float] | None, dict[str, float] | None, float]],
) -> dict[str, list[float | None]]:
    names = sorted({name for _, after, _ in intervals if after for name in after})
    rates: dict[str, list[float | None]] = {name: [] for name in names}
    for before, after, seconds in intervals:
        for name in names:
            if before is None or after is None or seconds <= 0:
                rates[name].append(None)
            else:
                increase = _increase(before.get(name, 0.0), after.get(name, 0.0))
                rates[name].append(round(increase * 60 / seconds, 3))
    return rates
