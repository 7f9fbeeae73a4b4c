"""Ending a run from outside its reach: killing its processes, reaping, watching its CPU time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable

from sandbox.host.cgroup_service import RunCgroup
from sandbox.spec import LimitName

CPU_POLL_SECONDS = 0.05
"""Shortest wait between two reads of a run's CPU time: it may overrun its CPU limit by
about this much per CPU the service's runs may use."""


def kill(pid: int) -> None:
    """SIGKILL `pid`; one already gone (or no longer ours to signal) is left alone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for `process` to exit without blocking the loop; kill it if it takes a second."""
    for _ in range(200):
        if process.poll() is not None:
            return
        await asyncio.sleep(0.005)
    process.kill()
    await asyncio.to_thread(process.wait)


async def watch_cpu(
    cgroup: RunCgroup, limit: float, cpus: int, stop_run: Callable[[LimitName], None]
) -> None:
    """Stop the run once its processes together used `limit` CPU seconds.

    Read from the slot's CPU accounting, from the run's start: the
    tool's RLIMIT_CPU bounds each process, this the whole run. It looks
    again only when the run could have used up what is left (on `cpus`
    at once), and at most every :data:`CPU_POLL_SECONDS`.
    """
    start = cgroup.cpu_seconds()
    if start is None:
        return
    while True:
        now = cgroup.cpu_seconds()
        if now is None:
            return
        left = limit - (now - start)
        if left <= 0:
            stop_run("cpu_time")
            return
        await asyncio.sleep(max(left / cpus, CPU_POLL_SECONDS))
