"""The sandbox's speed: a bare spawn vs the jail (cold, warm) vs execute_tool over HTTP.

Prints, in one run, for two programs — ``print(sum(range(1000)))`` and the
same after importing json/re/datetime/decimal/statistics — p50 / p99 / mean
over interleaved runs (the order rotates every iteration, to cancel machine
drift; each sample starts after a short pause, ``--settle-ms``, so it does
not pay for the previous one's teardown) of:

  (a)  bare spawn, no isolation: ``subprocess.run([python, "-I", "-S", "-c", P])``,
       the very argv the jailed Python tool runs (the base interpreter);
  (a') the same with the venv's interpreter and ``-I`` only (a reference,
       measured after the others rather than among them: a 20 ms interpreter
       start with site-packages between two samples evicts the CPU caches the
       next one would find);
  (b)  the jail, cold path, through the Runner: a child of the slot's pre-forked
       zygote applies every layer, then execs a fresh interpreter for the code;
  (c)  the jail, warm path, through the Runner: the same jailed child runs the
       code in the zygote's preloaded interpreter;
  (d)  ``execute_tool`` end-to-end over HTTP with a JWT, warm path, against a real
       sandbox service started on a free loopback port, sent by a minimal
       keep-alive HTTP/1.1 client (``testing/keepalive.py``) so the client's own
       cost stays out of the figure (httpx would add ~0.8 ms of its own);

then the throughput of execute_tool at concurrency 1, 8 and 32 (runs/s, p50,
p99; closed loop: each of N clients sends its next request as soon as its
last one is answered; the policy admits 8 runs at once, the rest queue),
execute_tool at an offered 250 runs/s with at most 8 in flight (open loop;
latency counted from each request's scheduled start), the same through the
Runner without HTTP, the ratios (b)/(a), (c)/(a), (d)/(a) against the
targets, and the bff's dashboard-data p50 against its slowest downstream
(all five services up), read two ways: against the downstream calls as the
bff timed them (``timings_ms``, made at once) and against each downstream
called alone, interleaved with the dashboard calls; with the CPU a dashboard
call costs the whole machine. Also the layers active and the seccomp allowlist.

Usage (as root, from the repository, on a quiet machine — see `uptime`):

    .venv/bin/python bench/sandbox.py [--runs 300] [--throughput-runs 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bff.settings import DEFAULT_DASHBOARD_PROMPT  # noqa: E402
from pagi import SERVICES  # noqa: E402
from pagi.auth import TokenSigner, generate_keys  # noqa: E402
from pagi.stack import Stack  # noqa: E402
from sandbox.host.runner import Runner  # noqa: E402
from sandbox.spec import RunSpec  # noqa: E402
from testing.figures import figures, percentile  # noqa: E402
from testing.keepalive import KeepAliveConnection  # noqa: E402
from testing.stack import stack_env  # noqa: E402

BASE_PYTHON = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3.11"))
VENV_PYTHON = str(REPO / ".venv" / "bin" / "python")
PROGRAMS = {
    "print": "print(sum(range(1000)))",
    "imports": "import json, re, datetime, decimal, statistics\nprint(sum(range(1000)))",
}
EXPECTED = "499500\n"
WARM_MODULES = ("json", "re", "datetime", "decimal", "statistics")
EXECUTE = "/api/v1/execute_tool"
DASHBOARD = "/api/v1/agi/dashboard-data"
BASE_VENV = "a'"
KINDS = ("a", "b", "c", "d")
"""Interleaved with each other; BASE_VENV is measured after them."""
LABELS = {
    "a": "(a)  bare spawn, same argv",
    "a'": "(a') bare spawn, venv -I (after)",
    "b": "(b)  jail, cold path",
    "c": "(c)  jail, warm path",
    "d": "(d)  execute_tool, HTTP+JWT, warm",
}


def bench_policy() -> str:
    """The default policy, with 8 runs at once and the python tool on the warm path."""
    text = (REPO / "policies" / "sandbox.toml").read_text()
    text = text.replace("max_concurrent_runs = 4", "max_concurrent_runs = 8")
    return re.sub(r'^executor = "\w+"', 'executor = "warm"', text, flags=re.MULTILINE)


def bare(argv: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, check=True)
    elapsed = (time.perf_counter() - started) * 1000
    assert completed.stdout == EXPECTED.encode(), completed
    return elapsed


async def jailed(runner: Runner, code: str, warm: bool) -> float:
    spec = RunSpec(tool="python", argv=(BASE_PYTHON, "-I", "-S", "-c", code), warm=warm)
    started = time.perf_counter()
    result = await runner.run(spec)
    elapsed = (time.perf_counter() - started) * 1000
    assert result.stdout == EXPECTED and result.path == ("warm" if warm else "cold"), result
    return elapsed


async def over_http(client: KeepAliveConnection, code: str) -> float:
    started = time.perf_counter()
    status, body = await client.json("POST", EXECUTE, {"tool_name": "python", "code": code})
    elapsed = (time.perf_counter() - started) * 1000
    assert status == 200, body
    assert body["result"]["stdout"] == EXPECTED and body["result"]["executor"] == "warm", body
    return elapsed


async def throughput(
    call: Callable[[], Awaitable[float]], concurrency: int, total: int
) -> tuple[float, list[float]]:
    """Runs/s and latencies of `total` calls kept `concurrency` at a time in flight."""
    latencies: list[float] = []
    remaining = [total]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            latencies.append(await call())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


async def offered(
    call: Callable[[], Awaitable[float]], rate: float, in_flight: int, total: int
) -> tuple[float, list[float]]:
    """Runs/s and latencies of `total` calls started at `rate` per second, at most `in_flight`
    at once (open loop).

    Each latency counts from the call's scheduled start: a call that waits
    for one in flight to finish counts its wait (no coordinated omission).
    """
    slots = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    started = time.perf_counter()

    async def one(index: int) -> None:
        due = started + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        async with slots:
            await call()
        latencies.append((time.perf_counter() - due) * 1000)

    await asyncio.gather(*(one(index) for index in range(total)))
    return total / (time.perf_counter() - started), latencies


def pooled(connections: list[KeepAliveConnection], code: str) -> Callable[[], Awaitable[float]]:
    """A call over whichever connection is idle (one request at a time on each)."""
    idle = list(connections)

    async def call() -> float:
        connection = idle.pop()
        try:
            return await over_http(connection, code)
        finally:
            idle.append(connection)

    return call


DOWNSTREAM_ALONE = {
    "python_agent": ("agent", "POST", "/api/v1/plan", {"prompt": DEFAULT_DASHBOARD_PROMPT}),
    "rust_sandbox": ("sandbox", "POST", EXECUTE, {"tool_name": "demo"}),
    "memory": ("memory", "GET", "/memory/latest", None),
}
"""The dashboard's three calls, as a client makes each one alone (operator token)."""


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes, all cores)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class DashboardFigures:
    """dashboard-data p50, each downstream's p50 as the bff timed it and as called alone."""

    def __init__(self) -> None:
        self.total: list[float] = []
        self.as_timed: dict[str, list[float]] = {}
        self.alone: dict[str, list[float]] = {}
        self.cpu_ms_per_call = 0.0


async def dashboard(
    stack: Stack, signer: TokenSigner, calls: int, settle_ms: float
) -> DashboardFigures:
    """dashboard-data, interleaved with each of its downstream calls made alone."""
    figures = DashboardFigures()
    direct: dict[str, KeepAliveConnection] = {}
    for key, (service, _, _, _) in DOWNSTREAM_ALONE.items():
        headers = {"authorization": f"Bearer {signer.sign(service, ttl=3600)}"}
        direct[key] = KeepAliveConnection(stack.settings.url_of(service), headers)
    async with KeepAliveConnection(stack.settings.url_of("bff")) as client:
        for connection in direct.values():
            await connection.__aenter__()
        await client.json("GET", DASHBOARD)
        busy = 0.0
        for _ in range(calls):
            await asyncio.sleep(settle_ms / 1000)
            before, started = busy_cpu_seconds(), time.perf_counter()
            status, body = await client.json("GET", DASHBOARD)
            figures.total.append((time.perf_counter() - started) * 1000)
            busy += busy_cpu_seconds() - before
            assert status == 200 and body["status"] == "ok", body
            for key, value in body["timings_ms"].items():
                figures.as_timed.setdefault(key, []).append(value)
            for key, (_, method, path, request) in DOWNSTREAM_ALONE.items():
                await asyncio.sleep(settle_ms / 1000)
                started = time.perf_counter()
                status, answer = await direct[key].json(method, path, request)
                figures.alone.setdefault(key, []).append((time.perf_counter() - started) * 1000)
                assert status == 200, answer
        for connection in direct.values():
            await connection.__aexit__()
    figures.cpu_ms_per_call = busy / calls * 1000
    return figures


def print_dashboard(figures: DashboardFigures, calls: int) -> None:
    """The dashboard target, read against both baselines."""
    total = statistics.median(figures.total)
    as_timed = {key: statistics.median(values) for key, values in figures.as_timed.items()}
    alone = {key: statistics.median(values) for key, values in figures.alone.items()}
    slowest, slowest_alone = max(as_timed.values()), max(alone.values())
    print(f"\nbff dashboard-data, {calls} calls, all services up:")
    print(
        f"  p50 {total:.1f} ms; downstream p50s as the bff timed them: "
        + ", ".join(f"{key} {value:.1f} ms" for key, value in as_timed.items())
        + f"; slowest + 10 % = {slowest * 1.1:.1f} ms ({verdict(total, slowest * 1.1)})"
    )
    print(
        "  each downstream called alone, interleaved: "
        + ", ".join(f"{key} {value:.1f} ms" for key, value in alone.items())
        + f"; dashboard / slowest alone = {total / slowest_alone:.2f}"
        f" ({verdict(total, slowest_alone * 1.1)} against + 10 %)"
    )
    cpus = os.cpu_count() or 1
    print(
        f"  CPU per dashboard call, all processes: {figures.cpu_ms_per_call:.1f} ms"
        f" (on {cpus} CPUs, at least {figures.cpu_ms_per_call / cpus:.1f} ms of wall time)"
    )


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "NOT met"


async def measure(runner: Runner, url: str, token: str, args: argparse.Namespace) -> None:
    report = runner.isolation_report()
    active = [name for name, state in report.items() if state.get("active")]
    print(f"layers active: {', '.join(active)}")
    print(
        f"seccomp: allowlist {report['seccomp']['allowlist_size']} syscalls,"
        f" filter {report['seccomp']['filter_size']} BPF instructions;"
        f" landlock ABI {report['landlock']['abi']}"
    )
    headers = {"authorization": f"Bearer {token}"}
    async with KeepAliveConnection(url, headers) as client:
        for _ in range(5):  # warm caches, connections and zygotes before measuring
            for code in PROGRAMS.values():
                await jailed(runner, code, warm=False)
                await jailed(runner, code, warm=True)
                await over_http(client, code)
        samples = {(name, kind): [] for name in PROGRAMS for kind in (*KINDS, BASE_VENV)}
        for iteration in range(args.runs):
            for name, code in PROGRAMS.items():
                shift = iteration % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    # Each sample starts on a settled machine, not amid the
                    # previous sample's teardown (or the next jail being built).
                    await asyncio.sleep(args.settle_ms / 1000)
                    if kind == "a":
                        elapsed = bare([BASE_PYTHON, "-I", "-S", "-c", code])
                    elif kind == "d":
                        elapsed = await over_http(client, code)
                    else:
                        elapsed = await jailed(runner, code, warm=kind == "c")
                    samples[(name, kind)].append(elapsed)
        for _ in range(args.runs):
            for name, code in PROGRAMS.items():
                await asyncio.sleep(args.settle_ms / 1000)
                samples[(name, BASE_VENV)].append(bare([VENV_PYTHON, "-I", "-c", code]))
        for name in PROGRAMS:
            print(f"\nprogram {name!r}, {args.runs} interleaved runs each:")
            for kind in (*KINDS, BASE_VENV):
                print(f"  {LABELS[kind]:36s} {figures(samples[(name, kind)])}")
            p50 = {kind: statistics.median(samples[(name, kind)]) for kind in (*KINDS, BASE_VENV)}
            print(
                f"  ratios of p50: (b)/(a) {p50['b'] / p50['a']:.2f} (target <= 1.2,"
                f" {verdict(p50['b'] / p50['a'], 1.2)})"
                f"  (c)/(a) {p50['c'] / p50['a']:.2f}"
                f"  (d)/(a) {p50['d'] / p50['a']:.2f} (target <= 0.5,"
                f" {verdict(p50['d'] / p50['a'], 0.5)})"
                f"  (d)/(a') {p50['d'] / p50[BASE_VENV]:.2f}"
            )

        print("\nexecute_tool over HTTP, warm path, program 'print' (policy: 8 runs at once):")
        for concurrency in (1, 8, 32):
            connections = [KeepAliveConnection(url, headers) for _ in range(concurrency)]
            for connection in connections:
                await connection.__aenter__()
            rate, latencies = await throughput(
                pooled(connections, PROGRAMS["print"]), concurrency, args.throughput_runs
            )
            for connection in connections:
                await connection.__aexit__()
            note = ""
            if concurrency == 8:
                met = rate >= 250 and percentile(latencies, 0.99) <= 25
                verdict_text = "met" if met else "NOT met"
                note = (
                    f"  (closed loop, >= 250 runs/s with p99 <= 25 ms: {verdict_text};"
                    " needs >= 320 runs/s, Little's law)"
                )
            print(f"  concurrency {concurrency:2d}: {rate:7.1f} runs/s  {figures(latencies)}{note}")
        connections = [KeepAliveConnection(url, headers) for _ in range(8)]
        for connection in connections:
            await connection.__aenter__()
        rate, latencies = await offered(
            pooled(connections, PROGRAMS["print"]), 250, 8, args.throughput_runs
        )
        for connection in connections:
            await connection.__aexit__()
        met = rate >= 250 * 0.99 and percentile(latencies, 0.99) <= 25
        print(
            f"  offered 250/s, <= 8 in flight: {rate:5.1f} runs/s  {figures(latencies)}"
            f"  (target 250 runs/s at concurrency <= 8 with p99 <= 25 ms:"
            f" {'met' if met else 'NOT met'})"
        )

    print("\nwarm path through the Runner (no HTTP), program 'print':")
    for concurrency in (1, 8, 32):
        rate, latencies = await throughput(
            lambda: jailed(runner, PROGRAMS["print"], warm=True),
            concurrency,
            args.throughput_runs,
        )
        print(f"  concurrency {concurrency:2d}: {rate:7.1f} runs/s  {figures(latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=300, help="interleaved runs of each kind")
    parser.add_argument("--throughput-runs", type=int, default=600, help="runs per concurrency")
    parser.add_argument("--dashboard-calls", type=int, default=100)
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=10.0,
        help="pause before each interleaved sample and dashboard call (0: back to back)",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="pagi-bench-") as tmp:
        root = Path(tmp)
        keys = root / "keys"
        generate_keys(keys)
        policy = root / "sandbox.toml"
        policy.write_text(bench_policy())
        env = stack_env(
            root / "state",
            keys,
            PAGI_SANDBOX_POLICY=str(policy),
            PAGI_SANDBOX_WARM_MODULES='["' + '", "'.join(WARM_MODULES) + '"]',
            LOG_LEVEL="warning",
        )
        stack = Stack(env=env, services=list(SERVICES), cwd=REPO)
        stack.start(timeout=90)
        try:
            token = TokenSigner.from_keys_dir(keys, "operator").sign("sandbox", ttl=3600)
            runner = Runner(
                python_executable=BASE_PYTHON,
                state_dir=root / "runner",
                warm_modules=WARM_MODULES,
            )
            asyncio.run(_with_runner(runner, stack.settings.url_of("sandbox"), token, args))
            signer = TokenSigner.from_keys_dir(keys, "operator")
            print_dashboard(
                asyncio.run(dashboard(stack, signer, args.dashboard_calls, args.settle_ms)),
                args.dashboard_calls,
            )
        finally:
            stack.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


async def _with_runner(runner: Runner, url: str, token: str, args: argparse.Namespace) -> None:
    (Path(runner.runs_root).parent).mkdir(parents=True, exist_ok=True)
    await runner.start()
    try:
        await measure(runner, url, token, args)
    finally:
        await runner.close()


if __name__ == "__main__":
    main()
