"""What observability costs execute_tool: tracing off (the default) against tracing on.

Starts two sandboxes on a private copy of the default policy: (a) as it
starts by default, with no OTLP endpoint (no tracing set up), and (b) with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP receiver on loopback,
so each request makes a span that is exported. Requests alternate between
the two, one at a time, each over its own keep-alive connection
(:mod:`bench.keepalive`), and the script prints the p50 / p99 / mean of
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

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.keepalive import KeepAliveConnection  # noqa: E402
from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from pagi.metrics import HttpMetricsMiddleware, metrics_of  # noqa: E402
from pagi.stack import Stack  # noqa: E402
from testing.otlp_receiver import otlp_receiver  # noqa: E402
from testing.stack import stack_env  # noqa: E402

BODY = json.dumps({"tool_name": "python", "code": "print(2+2)"}).encode()


def figures(samples: list[float], unit: str = "ms") -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered):7.3f} {unit}  p99 {p99:7.3f} {unit}"
        f"  mean {statistics.fmean(ordered):7.3f} {unit}  (n={len(ordered)})"
    )


def start_sandbox(root: Path, keys: Path, source: Path = REPO, **env: str) -> Stack:
    settings = {"PYTHONPATH": str(source), "LOG_LEVEL": "warning", **env}
    policy = source / "policies" / "sandbox.toml"
    stack = Stack(
        env=stack_env(root / "state", keys, PAGI_SANDBOX_POLICY=str(policy), **settings),
        services=["sandbox"],
        cwd=source,
    )
    stack.start(timeout=60)
    return stack


async def alternate(
    urls: dict[str, str], token: str, runs: int, body: bytes = BODY
) -> dict[str, list[float]]:
    """Latencies (ms) of ``runs`` requests (`body`) to each sandbox, in turn, one at a time."""
    headers = {"authorization": f"Bearer {token}"}
    latency: dict[str, list[float]] = {name: [] for name in urls}
    connections = {name: KeepAliveConnection(url, headers) for name, url in urls.items()}
    for connection in connections.values():
        await connection.__aenter__()
    try:
        turns = list(connections.items())
        for round_number in range(runs + 20):
            # Who goes first rotates each round: no sandbox always follows the other.
            shift = round_number % len(turns)
            for name, connection in turns[shift:] + turns[:shift]:
                started = time.perf_counter()
                status, _ = await connection.request("POST", "/api/v1/execute_tool", body)
                elapsed = (time.perf_counter() - started) * 1000
                assert status == 200, status
                if round_number >= 20:  # warm-up left out
                    latency[name].append(elapsed)
    finally:
        for connection in connections.values():
            await connection.__aexit__()
    return latency


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--before", type=Path, help="the source tree of an earlier version")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder, otlp_receiver() as receiver:
        root = Path(folder)
        keys = root / "keys"
        generate_keys(keys)
        token = TokenSigner.from_keys_dir(keys, "operator").sign("sandbox", ttl=3600)
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
            print(f"  {name:<24} {figures(samples)}")
        p50 = {name: statistics.median(samples) for name, samples in latency.items()}
        off, on = p50["tracing off (default)"], p50["tracing on, exporting"]
        print(f"  p50 on / off: {on / off:.3f}")
        if "the earlier version" in p50:
            print(f"  p50 off / the earlier version: {off / p50['the earlier version']:.3f}")
        spans = [s for s in receiver.spans if s.name == "POST /api/v1/execute_tool"]
        print(f"  spans exported by the traced sandbox: {len(spans)}")
    bare, counted = asyncio.run(middleware_cost(20_000))
    print("\nHTTP metrics middleware, a bare ASGI request in this process")
    print(f"  without {figures(bare, 'µs')}")
    print(f"  with    {figures(counted, 'µs')}")
    print(f"  added p50: {statistics.median(counted) - statistics.median(bare):.2f} µs")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
