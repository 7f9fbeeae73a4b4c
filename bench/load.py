"""Load on the sandbox at full size: prints every figure.

    .venv/bin/python bench/load.py [--burst 1000] [--concurrency 200]
                                   [--sequential 2000] [--slow 400]

Starts its own sandbox on a free loopback port (temporary state and keys),
then runs, in order:

1. a burst of ``--burst`` execute_tool requests at ``--concurrency``;
2. ``--sequential`` runs one after another;
3. ``--slow`` slow clients sending headers byte by byte while a normal
   client keeps calling.

For each: answers by status, runs/s, p50/p99 latency, and the service's
RSS, open fds, zombies and leftover working dirs before and after.
Exit status 1 when an answer other than 200/429 (with Retry-After) was
seen, or something leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from testing.live import service_pid, start_live_stack  # noqa: E402
from testing.load_driver import (  # noqa: E402
    PeakSampler,
    ProcessSnapshot,
    burst,
    fds_of_new_jails,
    jails_built_ahead,
    leftovers,
    sequential,
    settle,
    slow_clients,
)


def _print(title: str, figures: dict) -> None:
    print(f"\n== {title}")
    for key, value in figures.items():
        print(f"  {key:<22} {value}")


def _footprint(before: ProcessSnapshot, after: ProcessSnapshot, peak: PeakSampler | None) -> dict:
    figures = {
        "rss_before_MiB": round(before.rss / 2**20, 1),
        "rss_after_MiB": round(after.rss / 2**20, 1),
        "fds_before": before.fds,
        "fds_after": after.fds,
        "zombies_after": after.zombies,
        "workdirs_before": before.workdirs,
        "workdirs_after": after.workdirs,
        "children_after": after.children,
    }
    if peak is not None:
        figures["peak_tree_rss_MiB"] = round(peak.peak / 2**20, 1)
        figures["peak_fds"] = peak.peak_fds
    return figures


def main() -> int:
    """Run the three scenarios and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=400, help="slow client connections")
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--tool", default="python", help="python (jailed interpreter) or demo")
    args = parser.parse_args()
    body = (
        {"tool_name": "python", "code": "print(sum(range(1000)))"}
        if args.tool == "python"
        else {"tool_name": args.tool}
    )

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pagi-load-") as tmp:
        keys = Path(tmp) / "keys"
        generate_keys(keys)
        stack = start_live_stack(Path(tmp) / "state", keys, services=["sandbox"])
        try:
            token = TokenSigner.from_keys_dir(keys, "operator").sign("sandbox", ttl=6 * 3600)
            base_url = stack.settings.url_of("sandbox")
            pid = service_pid(stack, "sandbox")
            work_root = Path(stack.env["PAGI_STATE_DIR"]) / "sandbox"
            asyncio.run(sequential(base_url, token, 10, body))  # warm-up

            ahead = jails_built_ahead(base_url)
            before = ProcessSnapshot.take(pid, work_root)
            with PeakSampler(pid) as peak:
                report = asyncio.run(burst(base_url, token, args.burst, args.concurrency, body))
            kept = fds_of_new_jails(base_url, ahead)
            after = settle(pid, work_root, before, 30, kept)
            figures = report.summary() | _footprint(before, after, peak)
            _print(f"burst: {args.burst} requests at concurrency {args.concurrency}", figures)
            if set(report.statuses) - {200, 429} or report.problems:
                failures.append("burst: answers other than 200 / 429 with Retry-After")
            failures += [f"burst: {leak}" for leak in leftovers(before, after, kept())]

            ahead = jails_built_ahead(base_url)
            before = ProcessSnapshot.take(pid, work_root)
            with PeakSampler(pid) as peak:
                report = asyncio.run(sequential(base_url, token, args.sequential, body))
            kept = fds_of_new_jails(base_url, ahead)
            after = settle(pid, work_root, before, 30, kept)
            figures = report.summary() | _footprint(before, after, peak)
            figures["rss_growth_KiB"] = round((after.rss - before.rss) / 1024, 1)
            _print(f"sequential: {args.sequential} runs", figures)
            if report.statuses != {200: args.sequential}:
                failures.append("sequential: not every run answered 200")
            failures += [f"sequential: {leak}" for leak in leftovers(before, after, kept())]

            client = httpx.Client(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
                trust_env=False,
            )

            def probe() -> float:
                started = time.monotonic()
                response = client.post("/api/v1/execute_tool", json={"tool_name": "demo"})
                response.raise_for_status()
                return time.monotonic() - started

            ahead = jails_built_ahead(base_url)
            before = ProcessSnapshot.take(pid, work_root)
            with client:
                slow = slow_clients(
                    "127.0.0.1",
                    stack.settings.port_of("sandbox"),
                    probe,
                    args.slow,
                    args.slow_seconds,
                )
            after = settle(pid, work_root, before, 30, fds_of_new_jails(base_url, ahead))
            _print(
                f"slow clients: {args.slow} connections for {args.slow_seconds:.0f}s",
                slow.summary() | _footprint(before, after, None),
            )
            if slow.probe_failures:
                failures.append("slow clients: normal requests failed")
        finally:
            stack.stop()

    print("\n== verdict:", json.dumps(failures) if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
