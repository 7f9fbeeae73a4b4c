"""execute_tool through HTTP: latency per executor, the service's own share, reload time.

Starts a real sandbox (the same way the e2e tests do) once per executor on
a private copy of the default policy, then sends sequential requests and
prints p50 / p99 / mean of

- the client-side latency of ``execute_tool`` (demo and ``print(2+2)``),
- the service's share: latency minus the run's own ``duration_ms``
  (token check, policy, admission, audit, JSON, HTTP on loopback),
- throughput at concurrency 1, 8 and 32 (``print(2+2)``): runs/s, p99, 429s,
- the time from a policy edit to the new version answering (edits 1.5 s apart).

Usage: .venv/bin/python bench/sandbox_http.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from pagi.stack import Stack  # noqa: E402
from testing.figures import figures  # noqa: E402
from testing.stack import stack_env  # noqa: E402

DEFAULT_POLICY = (REPO / "policies" / "sandbox.toml").read_text()


def replace(path: Path, text: str) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def throughput(url: str, headers: dict[str, str], concurrency: int, total: int) -> str:
    """Runs/s and p99 of ``total`` requests kept ``concurrency`` at a time in flight."""
    body = {"tool_name": "python", "code": "print(2+2)"}
    latencies: list[float] = []
    refused = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(total):
            queue.put_nowait(index)

        async def worker() -> None:
            nonlocal refused
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.post("/api/v1/execute_tool", json=body)
                if response.status_code == 429:
                    refused += 1
                    continue
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return (
        f"concurrency {concurrency:>2}: {len(latencies) / elapsed:7.1f} runs/s"
        f"  {figures(latencies)}  429s {refused}"
    )


def bench_executor(root: Path, keys: Path, executor: str, runs: int) -> None:
    policy = root / executor / "policies" / "sandbox.toml"
    policy.parent.mkdir(parents=True)
    text = re.sub(
        r'^executor = "\w+"', f'executor = "{executor}"', DEFAULT_POLICY, flags=re.MULTILINE
    )
    policy.write_text(text)
    env = stack_env(
        root / executor / "state", keys, PAGI_SANDBOX_POLICY=str(policy), LOG_LEVEL="warning"
    )
    stack = Stack(env=env, services=["sandbox"], cwd=REPO)
    stack.start(timeout=60)
    try:
        url = stack.settings.url_of("sandbox")
        token = TokenSigner.from_keys_dir(keys, "operator").sign("sandbox", ttl=3600)
        headers = {"Authorization": f"Bearer {token}"}
        bodies = {
            "demo": {"tool_name": "demo"},
            "python": {"tool_name": "python", "code": "print(2+2)"},
        }
        latency: dict[str, list[float]] = {name: [] for name in bodies}
        service: dict[str, list[float]] = {name: [] for name in bodies}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for _ in range(10):
                for body in bodies.values():
                    client.post("/api/v1/execute_tool", json=body).raise_for_status()
            for _ in range(runs):
                for name, body in bodies.items():
                    started = time.perf_counter()
                    response = client.post("/api/v1/execute_tool", json=body)
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    result = response.json()["result"]
                    latency[name].append(elapsed)
                    service[name].append(elapsed - result["duration_ms"])
            print(f"\n== python executor {executor!r} ==")
            for name in bodies:
                print(f"execute_tool {name:<7} latency       {figures(latency[name])}")
                print(f"execute_tool {name:<7} service share {figures(service[name])}")
            for concurrency in (1, 8, 32):
                print(asyncio.run(throughput(url, headers, concurrency, max(runs, 300))))
            reloads = []
            for index in range(10):
                time.sleep(1.5)  # an operator's edits are seconds apart
                version = replace(policy, text + f"\n# edit {index}\n")
                started = time.perf_counter()
                while client.get("/api/v1/policy").json()["version"] != version:
                    time.sleep(0.005)
                reloads.append((time.perf_counter() - started) * 1000)
            print(f"policy edit -> live             {figures(reloads)}")
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = root / "keys"
        generate_keys(keys)
        for executor in ("cold", "warm"):
            bench_executor(root, keys, executor, args.runs)


if __name__ == "__main__":
    main()
