"""Per-backend call counts, errors, latency and tokens: the one place the gateway counts.

Each ``record_*`` call feeds both views of the same figures: the
``GetMetrics`` RPC (counts since start, latency over a recent window) and
the Prometheus metrics of ``/metrics`` (:mod:`pagi.metric_catalogue`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from pagi import metric_catalogue as prometheus

LATENCY_WINDOW = 1024
"""Latency figures cover the most recent calls only, so memory stays bounded."""


@dataclass
class LatencySummary:
    """Latency figures over the recent window, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class BackendStats:
    """Counters of one backend."""

    backend: str
    model: str
    calls: int = 0
    errors: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def latency(self) -> LatencySummary:
        """Summary of the recent successful calls' latency."""
        values = sorted(self.latencies_ms)
        if not values:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0)
        return LatencySummary(
            count=len(values),
            mean_ms=sum(values) / len(values),
            p50_ms=_percentile(values, 0.50),
            p95_ms=_percentile(values, 0.95),
            max_ms=values[-1],
        )


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class GatewayMetrics:
    """Everything the gateway counts, keyed by backend name."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.backends: dict[str, BackendStats] = {}

    def _stats(self, backend: str, model: str) -> BackendStats:
        stats = self.backends.get(backend)
        if stats is None:
            stats = self.backends[backend] = BackendStats(backend, model)
        return stats

    def register(self, backend: str, model: str) -> None:
        """Make a backend appear in reports before its first call."""
        self._stats(backend, model)

    def record_success(
        self,
        backend: str,
        model: str,
        latency_ms: float,
        rpc: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """A call that produced a plan or a decision (and the tokens it reported)."""
        stats = self._stats(backend, model)
        stats.calls += 1
        stats.latencies_ms.append(latency_ms)
        prometheus.MODEL_CALLS.labels(backend, rpc, "ok").inc()
        prometheus.MODEL_CALL_DURATION.labels(backend, rpc).observe(latency_ms / 1000)
        if prompt_tokens > 0:
            prometheus.MODEL_TOKENS.labels(backend, "prompt").inc(prompt_tokens)
        if completion_tokens > 0:
            prometheus.MODEL_TOKENS.labels(backend, "completion").inc(completion_tokens)

    def record_error(self, backend: str, model: str, code: str, rpc: str) -> None:
        """A call that reached the backend and failed with status ``code``."""
        stats = self._stats(backend, model)
        stats.calls += 1
        stats.errors += 1
        stats.errors_by_code[code] += 1
        prometheus.MODEL_CALLS.labels(backend, rpc, code).inc()

    def record_rejected(self, backend: str, model: str) -> None:
        """A call refused because every upstream slot was taken."""
        self._stats(backend, model).rejected += 1
        prometheus.MODEL_CALLS_REJECTED.labels(backend).inc()

    @property
    def uptime_seconds(self) -> float:
        """Seconds since the metrics started."""
        return time.monotonic() - self.started
