"""Load against a running sandbox, and the process figures that judge it.

Used at a small size by ``tests/load`` (CI) and at full size by
``bench/load.py``. A burst sends many ``execute_tool`` requests at a fixed
concurrency; a sequential run sends them one after another. Around both, a
:class:`ProcessSnapshot` records RSS, open fds, zombies and leftover
working dirs of the service, and a :class:`PeakSampler` follows RSS while
the load runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from testing.live import (
    descendants,
    fd_count,
    json_error_problem,
    rss_bytes,
    tree_rss_bytes,
    zombies_under,
)

PYTHON_PROGRAM = "print(sum(range(1000)))"


def percentile_ms(latencies: list[float], fraction: float) -> float:
    """The latency (seconds in, milliseconds out) at ``fraction`` (0..1) of ``latencies``."""
    if not latencies:
        return 0.0
    ordered = sorted(latencies)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index] * 1000


def capacity_problems(
    total: int, answered: int, served: int, unclean: list[str], min_served_share: float
) -> list[str]:
    """Why a load breaks its capacity claim, or nothing.

    The claim: every one of ``total`` requests answered, at least
    ``min_served_share`` of them served, and every other one refused cleanly
    (``unclean`` lists the answers that were not).
    """
    problems = []
    if answered != total:
        problems.append(f"{answered} of {total} requests answered")
    if unclean:
        problems.append(f"{len(unclean)} answers were not clean: {unclean[:3]}")
    if served < min_served_share * total:
        problems.append(
            f"{served} of {total} requests served ({served / total:.0%});"
            f" at least {min_served_share:.0%} must be"
        )
    return problems


@dataclass
class LoadReport:
    """What a load run saw from the client side."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tool_statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def completed(self) -> int:
        """Requests that got an HTTP answer."""
        return sum(self.statuses.values())

    def percentile(self, fraction: float) -> float:
        """Latency at ``fraction`` (0..1), in milliseconds."""
        return percentile_ms(self.latencies, fraction)

    @property
    def ok_share(self) -> float:
        """Share of the answered requests that ran."""
        return self.statuses.get(200, 0) / self.completed if self.completed else 0.0

    def capacity_problems(self, total: int, min_ok_share: float) -> list[str]:
        """Why this load breaks the capacity claim (see :func:`capacity_problems`).

        Clean refusals here are 429s with PAGI's JSON error and a Retry-After
        in seconds; a run counts when it answered 200 with tool_status ok.
        """
        served = self.tool_statuses.get("ok", 0)
        return capacity_problems(total, self.completed, served, self.problems, min_ok_share)

    def summary(self) -> dict[str, Any]:
        """Figures to print and to put in assertion messages."""
        ok = self.statuses.get(200, 0)
        return {
            "requests": self.completed,
            "statuses": dict(sorted(self.statuses.items())),
            "tool_statuses": dict(self.tool_statuses),
            "elapsed_s": round(self.elapsed, 2),
            "ok_share": round(self.ok_share, 3),
            "runs_per_s": round(ok / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(0.50), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 1),
            "problems": self.problems[:10],
        }


def _judge(report: LoadReport, response: httpx.Response) -> None:
    """Count one answer and note anything other than 200 or a well-formed 429."""
    report.statuses[response.status_code] += 1
    if response.status_code == 200:
        body = response.json()
        report.tool_statuses[body.get("tool_status", "?")] += 1
        if body.get("tool_status") != "ok":
            report.problems.append(f"200 with tool_status {body.get('tool_status')}: {body}")
    elif response.status_code == 429:
        retry_after = response.headers.get("retry-after", "")
        if not retry_after.isdigit():
            report.problems.append(f"429 without a usable Retry-After: {retry_after!r}")
        problem = json_error_problem(response)
        if problem is not None:
            report.problems.append(problem)
    else:
        report.problems.append(f"{response.status_code}: {response.text[:200]}")


async def _one(client: httpx.AsyncClient, body: dict[str, Any], report: LoadReport) -> None:
    started = time.perf_counter()
    try:
        response = await client.post("/api/v1/execute_tool", json=body)
    except httpx.HTTPError as exc:
        report.problems.append(f"transport error: {type(exc).__name__}: {exc}")
        return
    report.latencies.append(time.perf_counter() - started)
    _judge(report, response)


def _client(base_url: str, token: str, concurrency: int, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        trust_env=False,
    )


async def burst(
    base_url: str,
    token: str,
    total: int,
    concurrency: int,
    body: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> LoadReport:
    """``total`` requests, ``concurrency`` in flight at any time."""
    body = body or {"tool_name": "python", "code": PYTHON_PROGRAM}
    report = LoadReport()
    pending = iter(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in pending:
            await _one(client, body, report)

    async with _client(base_url, token, concurrency, timeout) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        report.elapsed = time.perf_counter() - started
    return report


async def sequential(
    base_url: str,
    token: str,
    total: int,
    body: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> LoadReport:
    """``total`` requests one after another on one connection."""
    return await burst(base_url, token, total, 1, body, timeout)


# --------------------------------------------------------------------------- process figures


def count_run_dirs(work_root: Path) -> int:
    """Entries under the sandbox's work root, two levels deep.

    The runner keeps per-run directories one level down (e.g.
    ``sandbox-runs/<id>``); counting both levels catches a leftover whatever
    the exact layout.
    """
    try:
        top = list(os.scandir(work_root))
    except FileNotFoundError:
        return 0
    count = 0
    for entry in top:
        count += 1
        if entry.is_dir(follow_symlinks=False):
            try:
                count += len(os.listdir(entry.path))
            except OSError:
                pass
    return count


@dataclass(frozen=True)
class ProcessSnapshot:
    """The service's footprint at one moment."""

    rss: int
    tree_rss: int
    fds: int
    zombies: int
    children: int
    workdirs: int

    @classmethod
    def take(cls, pid: int, work_root: Path) -> ProcessSnapshot:
        """Measure the service ``pid`` whose runs live under ``work_root``."""
        return cls(
            rss=rss_bytes(pid),
            tree_rss=tree_rss_bytes(pid),
            fds=fd_count(pid),
            zombies=len(zombies_under(pid)),
            children=len(descendants(pid)),
            workdirs=count_run_dirs(work_root),
        )

    def describe(self) -> str:
        """One line for reports."""
        return (
            f"rss {self.rss / 2**20:.1f} MiB (tree {self.tree_rss / 2**20:.1f} MiB), "
            f"fds {self.fds}, zombies {self.zombies}, children {self.children}, "
            f"workdirs {self.workdirs}"
        )


def leftovers(before: ProcessSnapshot, after: ProcessSnapshot, kept_fds: int) -> list[str]:
    """What the service holds at ``after`` that it did not at ``before``.

    ``kept_fds``: those it keeps by design since ``before`` (jails built ahead).
    """
    problems = []
    if after.zombies:
        problems.append(f"{after.zombies} zombies")
    if after.workdirs > before.workdirs:
        problems.append(f"working dirs: {before.workdirs} before, {after.workdirs} after")
    if after.fds > before.fds + kept_fds:
        problems.append(f"fds: {before.fds} before (+{kept_fds} kept), {after.fds} after")
    return problems


FDS_PER_JAIL_BUILT_AHEAD = 6
"""The service's ends of a waiting jail's pipes (stdin, stdout, stderr, config, report) and
the descriptor of its working dir its init sent (for the files the run will leave in out/)."""


def jails_built_ahead(base_url: str) -> int:
    """How many jails wait for their next run (the sandbox's ``/health``)."""
    health = httpx.get(f"{base_url}/health", timeout=10, trust_env=False).json()
    return int(health["isolation"]["warm_path"]["jails_built_ahead"])


def fds_of_new_jails(base_url: str, before: int) -> Callable[[], int]:
    """The fds of the jails built ahead since there were `before`: kept by design, not leaked."""
    return lambda: FDS_PER_JAIL_BUILT_AHEAD * max(0, jails_built_ahead(base_url) - before)


def settle(
    pid: int,
    work_root: Path,
    baseline: ProcessSnapshot,
    timeout: float,
    extra_fds: Callable[[], int] = lambda: 0,
) -> ProcessSnapshot:
    """Wait (up to ``timeout``) for the service to be back at rest; return the last snapshot.

    At rest: no zombies, no more working dirs than at ``baseline``, and no
    more fds than at ``baseline`` plus ``extra_fds()`` (those of state the
    service keeps by design, such as jails built ahead for the next runs).
    Connections and run cleanup finish asynchronously, hence the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = ProcessSnapshot.take(pid, work_root)
        rested = (
            now.zombies == 0
            and now.workdirs <= baseline.workdirs
            and now.fds <= baseline.fds + extra_fds()
        )
        if rested or time.monotonic() >= deadline:
            return now
        time.sleep(0.2)


class PeakSampler:
    """Follows a process tree's RSS in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self.peak_fds = max(self.peak_fds, fd_count(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- slow clients


@dataclass
class SlowClientReport:
    """How the service fared while slow clients held connections open."""

    slow_connections: int
    slow_connections_open_at_end: int
    probe_latencies: list[float]
    probe_failures: list[str]

    def summary(self) -> dict[str, Any]:
        """Figures to print."""
        return {
            "slow_connections": self.slow_connections,
            "still_open_at_end": self.slow_connections_open_at_end,
            "probes": len(self.probe_latencies) + len(self.probe_failures),
            "probe_failures": self.probe_failures[:5],
            "probe_p50_ms": round(statistics.median(self.probe_latencies) * 1000, 1)
            if self.probe_latencies
            else None,
            "probe_max_ms": round(max(self.probe_latencies) * 1000, 1)
            if self.probe_latencies
            else None,
        }


def slow_clients(
    host: str,
    port: int,
    probe: Any,
    connections: int,
    duration: float,
    byte_interval: float = 0.5,
) -> SlowClientReport:
    """Hold ``connections`` sockets that send a request's headers one byte at a time.

    Meanwhile ``probe()`` (a normal request, returning its latency in
    seconds or raising) runs every 200 ms. Everything is closed after
    ``duration`` seconds.
    """
    header = (
        b"POST /api/v1/execute_tool HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Slow: " + b"s" * 4000
    )
    sockets: list[socket.socket] = []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=5)
        sock.setblocking(False)
        sockets.append(sock)
    latencies: list[float] = []
    failures: list[str] = []
    position = 0
    deadline = time.monotonic() + duration
    next_byte = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_byte and position < len(header):
                for sock in list(sockets):
                    try:
                        sock.send(header[position : position + 1])
                    except OSError:
                        sockets.remove(sock)  # the server closed it: fine
                        sock.close()
                position += 1
                next_byte = time.monotonic() + byte_interval
            try:
                latencies.append(probe())
            except Exception as exc:  # noqa: BLE001 - every probe failure is a finding to report
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)
        still_open = 0
        for sock in sockets:
            try:
                if sock.recv(1) != b"":
                    still_open += 1
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        for sock in sockets:
            sock.close()
    return SlowClientReport(connections, still_open, latencies, failures)
