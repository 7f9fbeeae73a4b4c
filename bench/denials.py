"""What naming denials costs execute_tool: this version against an earlier one.

Starts a sandbox from this tree and one from the source tree in ``--before
DIR`` (an earlier version, e.g. ``git archive REV | tar -x -C DIR``), each
on its own default policy, and sends requests to them in turn, one at a
time, each over its own keep-alive connection (:mod:`testing.keepalive`):
first a program that is refused nothing (``print(2+2)``, warm path: the
figure that must not move), then one refused a socket five times (what a
denial costs, stderr lines included), then the ``demo`` tool (``/bin/echo``,
the cold path: a jail built and a command exec'd per run). Prints p50 / p99
/ mean of each, and the p50 ratios. Without ``--before`` only this version is measured.

Usage: .venv/bin/python bench/denials.py --before DIR [--runs 400]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testing.comparison import (  # noqa: E402
    alternate,
    comparison_arguments,
    operator_token,
    start_sandbox,
)
from testing.figures import figures  # noqa: E402


def _python(code: str) -> bytes:
    return json.dumps({"tool_name": "python", "code": code}).encode()


CASES = {
    "no denial, print(2+2), warm path": _python("print(2+2)"),
    "5 refused sockets, warm path": _python(
        "import socket\nfor _ in range(5):\n    try:\n"
        "        socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    except OSError:\n        pass\n"
    ),
    "demo (/bin/echo), cold path": json.dumps({"tool_name": "demo"}).encode(),
}


def main() -> None:
    args = comparison_arguments(__doc__.splitlines()[0])
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        keys = root / "keys"
        token = operator_token(keys)
        stacks = {"this version": start_sandbox(root / "now", keys)}
        if args.before:
            stacks["the earlier version"] = start_sandbox(root / "before", keys, args.before)
        urls = {name: stack.settings.url_of("sandbox") for name, stack in stacks.items()}
        try:
            results = {
                label: asyncio.run(alternate(urls, token, args.runs, body))
                for label, body in CASES.items()
            }
        finally:
            for stack in stacks.values():
                stack.stop()
    for label, latency in results.items():
        print(f"\nexecute_tool {label}, {args.runs} requests each, alternating")
        for name, samples in latency.items():
            print(f"  {name:<20} {figures(samples, decimals=3)}")
        if "the earlier version" in latency:
            now = statistics.median(latency["this version"])
            then = statistics.median(latency["the earlier version"])
            print(f"  p50 this / earlier: {now / then:.3f}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
