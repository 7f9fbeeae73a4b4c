"""Run slots: one run at a time each, with its cgroup, zygotes and the jail built ahead.

A freed slot starts the jail of its last run's tool at once (the slot's
*spare*, a :class:`RunPipes`), and a run takes a free slot whose spare fits
it (:class:`SlotPool`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import deque
from dataclasses import astuple, dataclass
from pathlib import Path

from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.report import ReportReader, report_channel
from sandbox.host.zygote import Zygote
from sandbox.jail.config import JailConfig
from sandbox.spec import RunSpec

RELEASE_PAUSES = (0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
"""Waits for a finished run's last processes to leave its slot before they are killed."""


class RunPipes:
    """The service's ends of one run's pipes: a jail that builds itself, then waits for its run.

    Its launcher read the :class:`JailConfig` frame; the payload frame, on
    the same pipe, starts the run. Closing the pipes without one withdraws
    it: the waiting tool sees EOF and exits, and init with it.
    """

    def __init__(
        self, stdin_w: int, stdout_r: int, stderr_r: int, config_w: int, reader: ReportReader
    ) -> None:
        self.stdin_w = stdin_w
        self.stdout_r = stdout_r
        self.stderr_r = stderr_r
        self.config_w = config_w
        self.reader = reader
        self.warm = False
        self.via_zygote = False
        self.process: subprocess.Popen[bytes] | None = None
        self.key: tuple[bool, JailConfig] | None = None
        """For a spare: what it was built for (warm or not, the config)."""

    def withdraw(self) -> None:
        """Close every end: the run never starts."""
        for fd in (self.stdin_w, self.stdout_r, self.stderr_r, self.config_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.reader.close()


@dataclass(frozen=True)
class JailEnds:
    """The jail's ends of a run's pipes, in the order a zygote receives them."""

    stdin_r: int
    stdout_w: int
    stderr_w: int
    config_r: int
    report_w: int

    def fds(self) -> list[int]:
        """The five fds, in order."""
        return list(astuple(self))

    def close(self) -> None:
        """Close them here (the jail has its copies)."""
        for fd in self.fds():
            os.close(fd)


def open_run_pipes() -> tuple[RunPipes, JailEnds]:
    """A run's pipes: the service's ends (reading its report on the running loop), the jail's."""
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
    stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
    config_r, config_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = report_channel()
    reader = ReportReader(asyncio.get_running_loop(), report_r)
    ours = RunPipes(stdin_w, stdout_r, stderr_r, config_w, reader)
    return ours, JailEnds(stdin_r, stdout_w, stderr_w, config_r, report_w)


class Slot:
    """One run at a time: a cgroup (when available), the warm zygote living in it, and
    the jail of the next run, built ahead (the spare)."""

    def __init__(self, index: int, cgroup: RunCgroup | None, root_dir: Path) -> None:
        self.index = index
        self.cgroup = cgroup
        self.root_dir = root_dir  # mountpoint of each run's root, in the run's own ns
        self.zygote: Zygote | None = None
        self.env_zygotes: dict[str, Zygote] = {}
        """One per package environment a run of this slot used (started on its first run)."""
        self.restarting = False
        self.spare: RunPipes | None = None
        self.spare_shape: tuple[object, ...] | None = None
        """What of a run's spec its spare was built for (see :func:`run_shape`)."""
        self.dirty = False
        """A spare was withdrawn: its processes may still be in the slot."""

    def take_spare(self, key: tuple[bool, JailConfig]) -> RunPipes | None:
        """The spare if it was built for `key` (else it is withdrawn)."""
        spare, self.spare = self.spare, None
        self.spare_shape = None
        if spare is not None and spare.key == key and not spare.reader.finished.done():
            return spare  # built for this run, and still waiting for it
        if spare is not None:
            self.withdraw_spare(spare)
        return None

    def withdraw_spare(self, spare: RunPipes | None = None) -> None:
        """Withdraw the spare (or `spare`, already taken out)."""
        if spare is None:
            spare, self.spare = self.spare, None
            self.spare_shape = None
        if spare is not None:
            spare.withdraw()
            self.dirty = True

    async def empty(self) -> None:
        """Kill what is left of earlier runs in the slot (normally nothing)."""
        self.dirty = False
        if self.cgroup is None:
            return
        try:
            # A finished run's init (or the launcher above it) is exiting:
            # give it a moment to leave the group before killing.
            for pause in RELEASE_PAUSES:
                if not self.cgroup.pids() - self.zygote_pid():
                    return
                await asyncio.sleep(pause)
            await asyncio.to_thread(self.cgroup.kill_all, self.zygote_pid())
        except OSError:
            pass  # prepare_run retries, and fails the run closed if it must

    def env_zygote_alive(self, env: str) -> bool:
        """Whether the slot's zygote of the package environment `env` is up."""
        zygote = self.env_zygotes.get(env)
        return zygote is not None and zygote.alive()

    def zygote_pid(self) -> frozenset[int]:
        """The slot's zygotes' pids (the processes its cgroup keeps between runs)."""
        zygotes = [self.zygote, *self.env_zygotes.values()]
        return frozenset(
            z.pid for z in zygotes if z is not None and z.pid is not None and z.alive()
        )


class SlotPool:
    """The free slots; a run takes one whose spare jail fits it, when there is one."""

    def __init__(self) -> None:
        self._free: deque[Slot] = deque()
        self._waiting: deque[asyncio.Future[Slot]] = deque()

    def put(self, slot: Slot) -> None:
        """Free `slot`: to the longest-waiting run, or back to the pool."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    async def take(self, shape: tuple[object, ...]) -> Slot:
        """A free slot, preferring one whose spare was built for `shape`, then one without."""
        if self._free:
            chosen = next((s for s in self._free if s.spare_shape == shape), None)
            if chosen is None:
                chosen = next((s for s in self._free if s.spare is None), self._free[0])
            self._free.remove(chosen)
            return chosen
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.put(waiter.result())  # handed over just as the wait was cancelled
            raise


def run_shape(spec: RunSpec, warm: bool) -> tuple[object, ...]:
    """What of `spec` its jail is built from (the rest comes with the payload)."""
    return (
        warm,
        spec.limits,
        tuple(sorted(spec.env.items())),
        spec.network,
        spec.egress is not None,
        spec.readable_paths,
        spec.denied_syscalls,
        spec.package_env,
    )
