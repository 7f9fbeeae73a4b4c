"""This version of the sandbox against an earlier one, in one run, taking turns.

A benchmark that compares versions starts a sandbox from this tree and one
from an earlier source tree (``git archive REV | tar -x -C DIR``), each as
it starts by default, and sends them the same requests in alternation, so
that both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pagi.auth import TokenSigner, generate_keys
from pagi.stack import Stack
from testing.keepalive import KeepAliveConnection
from testing.stack import stack_env

REPO = Path(__file__).resolve().parent.parent
PRINT_2_PLUS_2 = json.dumps({"tool_name": "python", "code": "print(2+2)"}).encode()
WARM_UP_ROUNDS = 20


def comparison_arguments(description: str) -> argparse.Namespace:
    """``--runs N`` and ``--before DIR``, the options every version comparison takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--before", type=Path, help="the source tree of an earlier version")
    return parser.parse_args()


def operator_token(keys: Path) -> str:
    """New dev keys in ``keys`` and an hour's operator token for the sandbox."""
    generate_keys(keys)
    return TokenSigner.from_keys_dir(keys, "operator").sign("sandbox", ttl=3600)


def start_sandbox(root: Path, keys: Path, source: Path = REPO, **env: str) -> Stack:
    """A sandbox run from ``source``, with its own default policy and state under ``root``."""
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
    urls: dict[str, str], token: str, runs: int, body: bytes = PRINT_2_PLUS_2
) -> dict[str, list[float]]:
    """Latencies (ms) of ``runs`` requests (``body``) to each sandbox, in turn, one at a time."""
    headers = {"authorization": f"Bearer {token}"}
    latency: dict[str, list[float]] = {name: [] for name in urls}
    connections = {name: KeepAliveConnection(url, headers) for name, url in urls.items()}
    for connection in connections.values():
        await connection.__aenter__()
    try:
        turns = list(connections.items())
        for round_number in range(runs + WARM_UP_ROUNDS):
            # Who goes first rotates each round: no sandbox always follows the other.
            shift = round_number % len(turns)
            for name, connection in turns[shift:] + turns[:shift]:
                started = time.perf_counter()
                status, _ = await connection.request("POST", "/api/v1/execute_tool", body)
                elapsed = (time.perf_counter() - started) * 1000
                assert status == 200, status
                if round_number >= WARM_UP_ROUNDS:
                    latency[name].append(elapsed)
    finally:
        for connection in connections.values():
            await connection.__aexit__()
    return latency
