"""What observability costs execute_tool: tracing off (the default) against tracing on.

Starts two sandboxes on a private copy of the default policy: (a) as it
starts by default, with no OTLP endpoint (no tracing set up), and (b) with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP receiver on loopback,
so each request makes a span that is exported. Requests alternate between
the two, one at a time, each over its own keep-alive connection
(:mod:`testing.keepalive`), and the script prints the p50 / p99 / mean of
``execute_tool`` (``print(2+2)``, warm path) for each, the ratio of the
p50s, and how many spans (b) exported.

With ``--before DIR``, a third sandbox runs from the source tree in DIR (an
earlier version, e.g. ``git archive REV | tar -x -C DIR``), as that version
starts by default: what the default costs against it.

It also times the HTTP metrics middleware alone, which every service runs
whatever the settings: a request through a bare ASGI app with and without
it, in this process.

Usage: .venv/bin/python bench/tracing.py [--runs 400] [--before DIR]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pagi.metrics import HttpMetricsMiddleware, metrics_of  # noqa: E402
from testing.comparison import (  # noqa: E402
    alternate,
    comparison_arguments,
    operator_token,
    start_sandbox,
)
from testing.figures import figures  # noqa: E402
from testing.otlp_receiver import otlp_receiver  # noqa: E402


async def middleware_cost(requests: int) -> tuple[list[float], list[float]]:
    """µs per request through a bare ASGI app, without and with the metrics middleware."""

    async def app(scope: dict, receive, send) -> None:  # noqa: ANN001 - ASGI
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    measured = HttpMetricsMiddleware(app, metrics_of("bench"))
    scope = {"type": "http", "method": "POST", "path": "/api/v1/execute_tool", "headers": []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    bare: list[float] = []
    counted: list[float] = []
    for _ in range(requests):
        for target, samples in ((app, bare), (measured, counted)):
            started = time.perf_counter()
            await target(dict(scope), receive, send)
            samples.append((time.perf_counter() - started) * 1_000_000)
    return bare, counted


def main() -> None:
    args = comparison_arguments(__doc__.splitlines()[0])
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder, otlp_receiver() as receiver:
        root = Path(folder)
        keys = root / "keys"
        token = operator_token(keys)
        before = start_sandbox(root / "before", keys, args.before) if args.before else None
        plain = start_sandbox(root / "plain", keys)
        traced = start_sandbox(
            root / "traced",
            keys,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="500",
        )
        try:
            urls = {
                "tracing off (default)": plain.settings.url_of("sandbox"),
                "tracing on, exporting": traced.settings.url_of("sandbox"),
            }
            if before is not None:
                urls["the earlier version"] = before.settings.url_of("sandbox")
            latency = asyncio.run(alternate(urls, token, args.runs))
            time.sleep(1.5)  # the last batch of spans
        finally:
            for stack in (plain, traced, before):
                if stack is not None:
                    stack.stop()
        print(f"\nexecute_tool print(2+2), warm path, {args.runs} requests each, alternating")
        for name, samples in latency.items():
            print(f"  {name:<24} {figures(samples, decimals=3)}")
        p50 = {name: statistics.median(samples) for name, samples in latency.items()}
        off, on = p50["tracing off (default)"], p50["tracing on, exporting"]
        print(f"  p50 on / off: {on / off:.3f}")
        if "the earlier version" in p50:
            print(f"  p50 off / the earlier version: {off / p50['the earlier version']:.3f}")
        spans = [s for s in receiver.spans if s.name == "POST /api/v1/execute_tool"]
        print(f"  spans exported by the traced sandbox: {len(spans)}")
    bare, counted = asyncio.run(middleware_cost(20_000))
    print("\nHTTP metrics middleware, a bare ASGI request in this process")
    print(f"  without {figures(bare, 'µs', decimals=3)}")
    print(f"  with    {figures(counted, 'µs', decimals=3)}")
    print(f"  added p50: {statistics.median(counted) - statistics.median(bare):.2f} µs")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
