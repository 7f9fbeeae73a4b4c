"""Starting a run's jail: forked by the slot's zygote, or a launcher the service spawns.

Both the warm path and the cold path go through the slot's zygote when it
is up: both fork from it (born in the slot's cgroup), a warm run then runs
its code in the zygote's preloaded interpreter, a cold one execs the tool's
command inside the jail (a fresh interpreter for Python code). The service
never forks a jail itself (it has threads, and fork cost grows with its
memory); only when a zygote is down, or a tool has the host's network (it
must not inherit the zygote's empty network namespace), does it spawn the
launcher (vfork + exec) and move it into the slot's cgroup.

A jail is built before its request: the config pipe first carries the
:class:`~sandbox.jail.config.JailConfig`, and only later the request's
payload (see :func:`sandbox.host.collect.collect`).
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox.host.bytecode import launcher_path
from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.pipes import write_all, write_now
from sandbox.host.slots import JailEnds, RunPipes, Slot, open_run_pipes
from sandbox.host.supervision import kill, reap
from sandbox.host.unavailable import RunnerUnavailable
from sandbox.host.zygote_keeper import ZygoteKeeper
from sandbox.jail.config import JailConfig
from sandbox.jail.protocol import frame
from sandbox.spec import RunSpec


@dataclass(frozen=True)
class JailStarter:
    """Arms jails in the runner's slots (see the module docstring)."""

    python: str
    runs_root: Path
    """Every launcher's working directory: run roots are named relative to it."""
    package_fd: int
    """The sandbox package's directory, open: the launcher runs from it."""
    zygotes: ZygoteKeeper

    async def arm(
        self, spec: RunSpec, config: JailConfig, slot: Slot, cgroup: RunCgroup | None, warm: bool
    ) -> RunPipes:
        """Start a jail for `config` in `slot`; it builds itself, then waits for its payload."""
        if cgroup is not None:
            try:
                cgroup.prepare_run(spec.limits.memory_bytes, spec.limits.processes)
            except OSError as error:
                raise RunnerUnavailable(f"cgroup: {error}", layer="cgroup") from error
        jail, ends = open_run_pipes()
        try:
            self._start(jail, ends, slot, spec, warm)
        except OSError as error:
            jail.withdraw()
            raise RunnerUnavailable(f"cannot start the jail: {error}") from error
        finally:
            ends.close()
        if jail.process is not None and cgroup is not None:
            await self._move_launcher(jail, cgroup)
        # A frame of a few KiB: the pipe takes it at once.
        rest = write_now(jail.config_w, frame(config.to_bytes()))
        if rest:
            await write_all(asyncio.get_running_loop(), jail.config_w, rest, close=False)
        return jail

    def _start(self, jail: RunPipes, ends: JailEnds, slot: Slot, spec: RunSpec, warm: bool) -> None:
        """Hand `ends` to the slot's zygote for `spec`, or spawn a launcher on them."""
        zygote = self.zygotes.for_run(slot, spec)
        if zygote is not None:
            try:
                zygote.submit(ends.fds(), warm)
                jail.via_zygote, jail.warm = True, warm
                return
            except OSError:
                self.zygotes.lost(slot, spec)
        launcher = launcher_path(self.package_fd)
        jail.process = subprocess.Popen(
            [self.python, "-I", "-S", launcher, str(ends.config_r), str(ends.report_w)],
            stdin=ends.stdin_r,
            stdout=ends.stdout_w,
            stderr=ends.stderr_w,
            pass_fds=(ends.config_r, ends.report_w, self.package_fd),
            env={},
            cwd=self.runs_root,  # the run's root is named relative to it
            start_new_session=True,
        )

    async def _move_launcher(self, jail: RunPipes, cgroup: RunCgroup) -> None:
        """Move the launcher into the run's cgroup while its interpreter starts (it reads its
        config, and so goes on, only after this)."""
        assert jail.process is not None
        try:
            await asyncio.to_thread(cgroup.add, jail.process.pid)
        except OSError as error:
            kill(jail.process.pid)
            jail.withdraw()
            await reap(jail.process)
            raise RunnerUnavailable(f"cgroup: {error}", layer="cgroup") from error
