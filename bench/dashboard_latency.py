"""dashboard-data latency: all services up, then one downstream delayed, then one stalled.

    .venv/bin/python bench/dashboard_latency.py [--calls 50] [--delay 0.5]

Starts the five services as processes on free loopback ports (temporary
state and keys). Then measures ``GET /api/v1/agi/dashboard-data``:

1. all services up: ``--calls`` sequential calls;
2. the same stack, but the bff's sandbox is a loopback server that answers
   ``execute_tool`` after ``--delay`` seconds;
3. a bff whose three downstreams are loopback servers that each answer after
   ``--delay`` seconds (sequential calls would take three times that);
4. the bff's sandbox accepts connections and never answers (a few calls:
   each one waits the full REQUEST_TIMEOUT_SECONDS).

Prints p50/p95 of the whole call and p50 of each downstream call. Since the
bff calls its three downstreams concurrently, a dashboard call should cost
about its slowest downstream, not their sum.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from pagi import SERVICES  # noqa: E402
from pagi.auth import generate_keys  # noqa: E402
from pagi.stack import Stack  # noqa: E402
from testing.fake_downstream import Behaviour, FakeDownstream, serve  # noqa: E402
from testing.figures import percentile  # noqa: E402
from testing.stack import free_port, stack_env  # noqa: E402

DASHBOARD = "/api/v1/agi/dashboard-data"
KEYS = ("python_agent", "rust_sandbox", "memory")


def measure(bff_url: str, calls: int) -> dict:
    """Call dashboard-data ``calls`` times; latency figures in ms."""
    totals: list[float] = []
    parts: dict[str, list[float]] = {key: [] for key in KEYS}
    statuses: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:
        client.get(f"{bff_url}{DASHBOARD}")  # warm-up: connections, first plan
        for _ in range(calls):
            started = time.perf_counter()
            body = client.get(f"{bff_url}{DASHBOARD}").json()
            totals.append((time.perf_counter() - started) * 1000)
            statuses[body["status"]] = statuses.get(body["status"], 0) + 1
            for key in KEYS:
                parts[key].append(body["timings_ms"][key])
    part_p50 = {key: statistics.median(values) for key, values in parts.items()}
    return {
        "calls": calls,
        "statuses": statuses,
        "p50_ms": round(statistics.median(totals), 1),
        "p95_ms": round(percentile(totals, 0.95), 1),
        "downstream_p50_ms": {key: round(value, 1) for key, value in part_p50.items()},
        "slowest_downstream_p50_ms": round(max(part_p50.values()), 1),
        "sum_of_downstreams_p50_ms": round(sum(part_p50.values()), 1),
    }


def start_bff(env: dict[str, str], **overrides: str) -> Stack:
    """An extra bff on its own port, with some downstream URLs replaced."""
    port = free_port()
    bff_env = {**env, "GO_BFF_PORT": str(port), "GO_BFF_URL": f"http://127.0.0.1:{port}"}
    bff_env.update(overrides)
    stack = Stack(env=bff_env, services=["bff"], cwd=REPO)
    stack.start(timeout=60)
    return stack


def report(title: str, figures: dict) -> None:
    print(f"\n== {title}")
    for key, value in figures.items():
        print(f"  {key:<28} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--stalled-calls", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pagi-bench-") as tmp:
        keys = Path(tmp) / "keys"
        generate_keys(keys)
        env = stack_env(Path(tmp) / "state", keys)
        stack = Stack(env=env, services=list(SERVICES), cwd=REPO)
        stack.start(timeout=60)
        timeout = stack.settings.request_timeout_seconds
        try:
            report("all services up", measure(stack.settings.url_of("bff"), args.calls))

            slow = FakeDownstream()
            slow.behaviours["/api/v1/execute_tool"] = Behaviour(
                body={"tool_status": "ok", "result": {"stdout": "slow\n"}}, delay=args.delay
            )
            with serve(slow) as slow_url:
                bff = start_bff(env, RUST_SANDBOX_URL=slow_url)
                try:
                    figures = measure(bff.settings.url_of("bff"), args.calls)
                finally:
                    bff.stop()
            report(f"sandbox delayed by {args.delay:g}s", figures)

            every = FakeDownstream()
            every.behaviours = {
                "/api/v1/plan": Behaviour(body={"service": "agent", "status": "ok"}),
                "/api/v1/execute_tool": Behaviour(body={"tool_status": "ok", "result": {}}),
                "/memory/latest": Behaviour(body={"service": "memory", "record": None}),
            }
            for behaviour in every.behaviours.values():
                behaviour.delay = args.delay
            with serve(every) as fake_url:
                bff = start_bff(
                    env, PY_AGENT_URL=fake_url, RUST_SANDBOX_URL=fake_url, MEMORY_URL=fake_url
                )
                try:
                    figures = measure(bff.settings.url_of("bff"), args.calls)
                finally:
                    bff.stop()
            figures["if_sequential_ms"] = round(3 * args.delay * 1000, 1)
            report(f"all three downstreams delayed by {args.delay:g}s (fakes)", figures)

            with socket.socket() as silent:
                silent.bind(("127.0.0.1", 0))
                silent.listen(256)
                bff = start_bff(env, RUST_SANDBOX_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
                try:
                    figures = measure(bff.settings.url_of("bff"), args.stalled_calls)
                finally:
                    bff.stop()
            figures["request_timeout_s"] = timeout
            report("sandbox stalled (accepts, never answers)", figures)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
