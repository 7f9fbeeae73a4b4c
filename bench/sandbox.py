"""The jail's cost: a bare spawn vs the jail on the cold path vs the warm path.

Prints, for two programs — ``print(sum(range(1000)))`` and the same after
importing json/re/datetime/decimal/statistics — p50 / p99 / mean over
interleaved runs (to cancel machine drift) of:

  (a)  bare spawn, no isolation: ``subprocess.run([python, "-I", "-S", "-c", P])``,
       the very argv the jailed Python tool runs (the base interpreter);
  (a') the same with the venv's interpreter and ``-I`` only (issue 7's baseline);
  (b)  the jail, cold path (a launcher exec'd per run);
  (c)  the jail, warm path (a child of the slot's pre-forked zygote);

then the warm path's throughput through the Runner at concurrency 1, 8 and
32 (runs/s, p99), the ratios (b)/(a) and (c)/(a), the layers active and the
seccomp allowlist size. execute_tool over HTTP is measured by
``bench/sandbox_http.py``.

Usage (as root, from the repository): .venv/bin/python bench/sandbox.py [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox.runner import Runner  # noqa: E402
from sandbox.spec import RunSpec  # noqa: E402

BASE_PYTHON = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3.11"))
VENV_PYTHON = str(REPO / ".venv" / "bin" / "python")
PROGRAMS = {
    "print": "print(sum(range(1000)))",
    "imports": "import json, re, datetime, decimal, statistics\nprint(sum(range(1000)))",
}
WARM_MODULES = ("json", "re", "datetime", "decimal", "statistics")


def figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered):7.2f} ms  p99 {p99:7.2f} ms"
        f"  mean {statistics.fmean(ordered):7.2f} ms"
    )


def bare(argv: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, check=True)
    elapsed = (time.perf_counter() - started) * 1000
    assert completed.stdout == b"499500\n", completed
    return elapsed


async def jailed(runner: Runner, code: str, warm: bool) -> float:
    spec = RunSpec(tool="python", argv=(BASE_PYTHON, "-I", "-S", "-c", code), warm=warm)
    started = time.perf_counter()
    result = await runner.run(spec)
    elapsed = (time.perf_counter() - started) * 1000
    assert result.stdout == "499500\n" and result.path == ("warm" if warm else "cold"), result
    return elapsed


async def throughput(runner: Runner, concurrency: int, total: int) -> tuple[float, list[float]]:
    code = PROGRAMS["print"]
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(total):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            latencies.append(await jailed(runner, code, warm=True))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pagi-bench-") as state:
        runner = Runner(
            python_executable=BASE_PYTHON, state_dir=Path(state), warm_modules=WARM_MODULES
        )
        await runner.start()
        try:
            print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
            report = runner.isolation_report()
            active = [name for name, state in report.items() if state.get("active")]
            print(f"layers active: {', '.join(active)}")
            print(
                f"seccomp: allowlist {report['seccomp']['allowlist_size']} syscalls,"
                f" filter {report['seccomp']['filter_size']} BPF instructions;"
                f" landlock ABI {report['landlock']['abi']}"
            )
            samples: dict[tuple[str, str], list[float]] = {}
            kinds = ("a", "a'", "b", "c")
            for name in PROGRAMS:
                for kind in kinds:
                    samples[(name, kind)] = []
            for _ in range(3):  # warm caches before measuring
                for code in PROGRAMS.values():
                    await jailed(runner, code, warm=False)
                    await jailed(runner, code, warm=True)
            for iteration in range(runs):
                for name, code in PROGRAMS.items():
                    order = kinds[iteration % 4 :] + kinds[: iteration % 4]
                    for kind in order:
                        if kind == "a":
                            elapsed = bare([BASE_PYTHON, "-I", "-S", "-c", code])
                        elif kind == "a'":
                            elapsed = bare([VENV_PYTHON, "-I", "-c", code])
                        else:
                            elapsed = await jailed(runner, code, warm=kind == "c")
                        samples[(name, kind)].append(elapsed)
            labels = {
                "a": "(a)  bare spawn, same argv",
                "a'": "(a') bare spawn, venv -I",
                "b": "(b)  jail, cold path",
                "c": "(c)  jail, warm path",
            }
            for name in PROGRAMS:
                print(f"\nprogram {name!r}, {runs} interleaved runs each:")
                for kind in kinds:
                    print(f"  {labels[kind]:28s} {figures(samples[(name, kind)])}")
                base = statistics.median(samples[(name, "a")])
                base_venv = statistics.median(samples[(name, "a'")])
                cold = statistics.median(samples[(name, "b")])
                warm = statistics.median(samples[(name, "c")])
                print(
                    f"  ratios of p50: (b)/(a) {cold / base:.2f}  (c)/(a) {warm / base:.2f}"
                    f"  (b)/(a') {cold / base_venv:.2f}  (c)/(a') {warm / base_venv:.2f}"
                    f"  jail overhead cold {cold - base:+.2f} ms"
                )
            print("\nwarm path through the Runner (no HTTP):")
            for concurrency in (1, 8, 32):
                rate, latencies = await throughput(runner, concurrency, max(runs, 200))
                print(
                    f"  concurrency {concurrency:2d}: {rate:7.1f} runs/s  {figures(latencies)}"
                )
            print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        finally:
            await runner.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=300)
    asyncio.run(main(parser.parse_args().runs))
