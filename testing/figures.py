"""How the benchmarks summarise a list of latencies: one definition of p50, p99 and mean."""

from __future__ import annotations

import statistics


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` (0..1) of ``samples``, by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def figures(samples: list[float], unit: str = "ms", decimals: int = 2) -> str:
    """``p50 … p99 … mean … (n=…)`` of ``samples``, one line."""
    width = decimals + 5

    def shown(value: float) -> str:
        return f"{value:{width}.{decimals}f} {unit}"

    return (
        f"p50 {shown(statistics.median(samples))}  p99 {shown(percentile(samples, 0.99))}"
        f"  mean {shown(statistics.fmean(samples))}  (n={len(samples)})"
    )
