"""Gateway latency: GetPlan and StreamPlan over loopback gRPC, local and OpenAI-compatible.

Usage: ``.venv/bin/python bench/gateway_plan.py [CALLS]``. Starts an in-process
gateway (and, for the openai backend, the test suite's fake model server),
then prints p50/p95 round-trip latency per RPC and backend, the server-side
``latency_ms`` the gateway reports, and the throughput of concurrent calls.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # testing/ is not installed: it is found in the repository

from gateway.backends.openai import OpenAIBackend  # noqa: E402
from gateway.client import GatewayClient  # noqa: E402
from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from testing.fake_openai import FakeOpenAI  # noqa: E402
from testing.figures import percentile  # noqa: E402
from testing.gateway import serve_gateway  # noqa: E402

PROMPT = "Write a Python script that parses nginx logs, then plot the errors per hour"


async def measure(label: str, client: GatewayClient, calls: int) -> None:
    await client.get_plan(PROMPT)  # warm the channel
    round_trips, server_side = [], []
    for _ in range(calls):
        started = time.perf_counter()
        result = await client.get_plan(PROMPT)
        round_trips.append((time.perf_counter() - started) * 1000)
        server_side.append(result.latency_ms)
    streams = []
    for _ in range(calls):
        started = time.perf_counter()
        [_ async for _ in client.stream_plan(PROMPT)]
        streams.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    await asyncio.gather(*(client.get_plan(PROMPT) for _ in range(calls)))
    concurrent_rate = calls / (time.perf_counter() - started)
    print(
        f"{label:<8} GetPlan p50 {statistics.median(round_trips):6.2f} ms"
        f"  p95 {percentile(round_trips, 0.95):6.2f} ms"
        f"  (server-side p50 {statistics.median(server_side):6.2f} ms)"
        f" | StreamPlan p50 {statistics.median(streams):6.2f} ms"
        f" | {concurrent_rate:7.0f} GetPlan/s with {calls} concurrent"
    )


async def main(calls: int) -> None:
    keys_dir = Path(tempfile.mkdtemp(prefix="pagi-bench-keys-"))
    generate_keys(keys_dir)
    signer = TokenSigner.from_keys_dir(keys_dir, "agent")
    async with serve_gateway(keys_dir, pagi_gateway_max_concurrent_calls=64) as gateway:
        client = GatewayClient(gateway.target, signer, 10)
        await measure("local", client, calls)
        await client.close()
    fake = await FakeOpenAI().start()
    backend = OpenAIBackend(fake.url("ok"), model="fake-model", max_connections=64)
    async with serve_gateway(
        keys_dir, backend=backend, pagi_gateway_max_concurrent_calls=64
    ) as gateway:
        client = GatewayClient(gateway.target, signer, 10)
        await measure("openai", client, calls)
        await client.close()
    await fake.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
