"""Ending a run from outside its reach: killing its processes, reaping, watching its CPU time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable

from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.slots import RunPipes
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


class RunStop:
    """The service ending a run from outside its reach, and why (the first reason given).

    Killing the jail's init, or the launcher above it (init's parent-death
    signal), kills the whole pid namespace; the slot's cgroup is emptied
    after.
    """

    def __init__(self, jail: RunPipes) -> None:
        self._jail = jail
        self.stopped = False
        self.reason: LimitName | None = None
        """Why the service stopped the run (None: no limit, or not stopped)."""

    def __call__(self, reason: LimitName | None) -> None:
        if self.stopped:
            return
        self.stopped, self.reason = True, reason
        reader, process = self._jail.reader, self._jail.process
        if reader.report.jail_pid is not None and not reader.ended.done():
            kill(reader.report.jail_pid)  # not once it ended: its pid is free again
        if process is not None:
            kill(process.pid)


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
