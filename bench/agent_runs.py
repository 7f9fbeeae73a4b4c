"""Agent runs: the agent's own overhead per step, and runs per second at concurrency 8.

Starts the real gateway (local backend), sandbox, memory and agent (the same
way the e2e tests do) and sends goals holding Python code blocks, which the
local backend runs one per step with the ``python`` tool. Prints:

- overhead per step, excluding model and tool time: each step's wall time
  in the agent minus its gateway and sandbox round trips (the run record's
  ``elapsed_ms - model_ms - tools_ms``), p50 / p99 / mean over >= 300 steps;
  beside it, the model and tool time of a step, for scale;
- a run's fixed costs outside its steps (listing the tools, the last write to
  memory, the HTTP answer);
- runs/s and p50 / p99 run latency with 8 runs in flight;
- the baseline, in the same run: the same goals worked by a bare loop in
  this process (gateway ``Decide`` and sandbox ``execute_tool`` called
  directly: no budgets, events, checks or records), and the ratio.

Usage: .venv/bin/python bench/agent_runs.py [--runs 60] [--blocks 5] [--concurrent-runs 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.client import GatewayClient  # noqa: E402
from gateway.conversation import ChatMessage, Conversation, ToolSpec  # noqa: E402
from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from pagi.stack import Stack  # noqa: E402
from testing.figures import figures  # noqa: E402
from testing.stack import stack_env  # noqa: E402

CONCURRENCY = 8
PYTHON_TOOL = ToolSpec(
    "python",
    "Runs the given Python 3.11 program.",
    {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)


def goal(blocks: int, seed: int) -> str:
    code = "\n".join(f"```python\nprint({seed} + {n})\n```" for n in range(blocks))
    return f"Compute these.\n{code}"


async def agent_run(client: httpx.AsyncClient, text: str) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = await client.post("/api/v1/runs", json={"goal": text})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    record = response.json()["run"]
    if record["status"] != "completed":
        raise RuntimeError(f"run ended {record['status']} ({record['reason']}): {record['detail']}")
    return record, elapsed


async def bare_run(gateway: GatewayClient, sandbox: httpx.AsyncClient, text: str) -> float:
    """The same goal worked by the least a loop can do: ask, run, append, repeat."""
    started = time.perf_counter()
    messages = [ChatMessage("system", "Work the goal."), ChatMessage("user", text)]
    while True:
        served = await gateway.decide(Conversation(tuple(messages), (PYTHON_TOOL,)))
        calls = served.decision.tool_calls
        if not calls:
            return (time.perf_counter() - started) * 1000
        messages.append(ChatMessage("assistant", served.decision.content, calls))
        for call in calls:
            response = await sandbox.post(
                "/api/v1/execute_tool", json={"tool_name": call.name, **json.loads(call.arguments)}
            )
            messages.append(ChatMessage("tool", response.text, (), call.id))


async def in_flight(total: int, work) -> tuple[float, list[float]]:
    """Runs/s and latencies of ``total`` calls of ``work(index)``, CONCURRENCY at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(total):
        queue.put_nowait(index)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            latencies.append(await work(queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return total / (time.perf_counter() - started), latencies


async def measure(stack: Stack, keys_dir: Path, args: argparse.Namespace) -> None:
    settings = stack.settings
    operator = TokenSigner.from_keys_dir(keys_dir, "operator")
    agent_signer = TokenSigner.from_keys_dir(keys_dir, "agent")
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    agent = httpx.AsyncClient(
        base_url=settings.url_of("agent"),
        headers={"Authorization": f"Bearer {operator.sign('agent', 3600)}"},
        timeout=120,
        limits=limits,
    )
    sandbox = httpx.AsyncClient(
        base_url=settings.url_of("sandbox"),
        headers={"Authorization": f"Bearer {agent_signer.sign('sandbox', 300)}"},
        timeout=120,
        limits=limits,
    )
    gateway = GatewayClient(settings.gateway_target, agent_signer, 30)
    try:
        for seed in range(3):  # warm connections, channels and the sandbox's jails
            await agent_run(agent, goal(args.blocks, seed))
            await bare_run(gateway, sandbox, goal(args.blocks, seed))

        overhead, model, tools, fixed = [], [], [], []
        for seed in range(args.runs):
            record, client_ms = await agent_run(agent, goal(args.blocks, seed))
            steps = record["steps"]
            for step in steps:
                overhead.append(step["elapsed_ms"] - step["model_ms"] - step["tools_ms"])
                model.append(step["model_ms"])
                tools.append(step["tools_ms"])
            fixed.append(client_ms - sum(step["elapsed_ms"] for step in steps))
        print(f"agent overhead per step (local backend, {args.blocks} tool steps + 1 answer a run)")
        print(f"  overhead       {figures(overhead)}   target p50 <= 3 ms")
        print(f"  model (gRPC)   {figures(model)}")
        print(f"  tools (HTTP)   {figures(tools)}")
        print(f"  per run, outside its steps {figures(fixed)}")
        share = statistics.median(overhead) / statistics.median(
            [o + m + t for o, m, t in zip(overhead, model, tools, strict=True)]
        )
        print(f"  overhead / step time at p50: {share:.1%}")

        async def timed_agent_run(n: int) -> float:
            return (await agent_run(agent, goal(args.blocks, 1000 + n)))[1]

        agent_rate, agent_latency = await in_flight(args.concurrent_runs, timed_agent_run)
        bare_rate, bare_latency = await in_flight(
            args.concurrent_runs, lambda n: bare_run(gateway, sandbox, goal(args.blocks, 2000 + n))
        )
        print(f"runs at concurrency {CONCURRENCY} ({args.concurrent_runs} runs)")
        print(f"  agent      {agent_rate:6.2f} runs/s   latency {figures(agent_latency)}")
        print(f"  bare loop  {bare_rate:6.2f} runs/s   latency {figures(bare_latency)}")
        print(f"  agent / bare loop: {agent_rate / bare_rate:.2f}x the runs/s")
    finally:
        await agent.aclose()
        await sandbox.aclose()
        await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="sequential runs (steps = runs x 6)")
    parser.add_argument("--blocks", type=int, default=5, help="code blocks (tool steps) per run")
    parser.add_argument("--concurrent-runs", type=int, default=48, help="runs at concurrency 8")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="pagi-bench-agent-"))
    keys_dir = state / "keys"
    generate_keys(keys_dir)
    env = stack_env(state / "state", keys_dir, LOG_LEVEL="warning")
    stack = Stack(env=env, services=["gateway", "memory", "sandbox", "agent"], cwd=REPO)
    stack.start()
    try:
        asyncio.run(measure(stack, keys_dir, args))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
