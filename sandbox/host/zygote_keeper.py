"""Each slot's zygotes: started with the slot, recycled, restarted when one dies.

A slot has its own zygote (the service's interpreter, with the preloaded
modules) and, started by the first run there of a tool with a package
environment, one zygote per such environment. A zygote forks each run's
jail in the slot's cgroup; when none can (it is down, or the tool has the
host's network), the service spawns the launcher itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sandbox.host.background import BackgroundWork
from sandbox.host.interpreter import Interpreter
from sandbox.host.slots import Slot
from sandbox.host.zygote import Zygote
from sandbox.spec import RunSpec

RESTART_DELAY_SECONDS = 0.1
"""A dead zygote's slot runs cold at least this long before a new one starts."""


@dataclass(frozen=True)
class ZygoteSetup:
    """What every zygote of this runner is started with."""

    python: str
    warm_modules: tuple[str, ...]
    runs_root: Path
    interpreter: Interpreter
    package_fd: int
    package_env_cache: str
    """Where a package environment's preloaded modules keep caches (see :class:`Zygote`)."""
    recycle_after_runs: int


class ZygoteKeeper:
    """Starts, recycles and restarts the zygotes of the runner's slots."""

    def __init__(self, setup: ZygoteSetup, background: BackgroundWork) -> None:
        self.setup = setup
        self._background = background
        self.restarts = 0

    def start(self, slot: Slot) -> None:
        """Start the slot's own zygote (none when it cannot start: its runs go cold)."""
        setup = self.setup
        zygote = Zygote(
            setup.python,
            setup.warm_modules,
            _cgroup_files(slot),
            (slot.root_dir.name, setup.interpreter.read_paths(), self._hidden()),
            setup.runs_root,
            setup.package_fd,
        )
        try:
            zygote.start()
        except OSError:
            slot.zygote = None
            return
        slot.zygote = zygote

    def for_run(self, slot: Slot, spec: RunSpec) -> Zygote | None:
        """The zygote that forks `spec`'s jail in `slot`; None: the service spawns a launcher."""
        if spec.network:
            return None  # it must not inherit a zygote's empty network namespace
        if spec.package_env is not None:
            return self._env_zygote(slot, spec)
        return slot.zygote if self._ready(slot) else None

    def lost(self, slot: Slot, spec: RunSpec) -> None:
        """The zygote :meth:`for_run` gave for `spec` could not take the run: replace it."""
        if spec.package_env is not None:
            self._drop_env_zygote(slot, spec.package_env)
        else:
            self._schedule_restart(slot)

    def renew(self, slot: Slot) -> None:
        """A new policy: no state of the old zygotes carries over to the slot's next runs."""
        self._recycle(slot)
        for env in list(slot.env_zygotes):
            self._drop_env_zygote(slot, env)  # started again by the next run that needs it

    async def stop(self, slot: Slot) -> None:
        """Stop every zygote of the slot (runs in flight go on)."""
        zygotes = [slot.zygote, *slot.env_zygotes.values()]
        slot.zygote, slot.env_zygotes = None, {}
        for zygote in zygotes:
            if zygote is not None:
                await asyncio.to_thread(zygote.stop)

    def _env_zygote(self, slot: Slot, spec: RunSpec) -> Zygote | None:
        """The slot's zygote for `spec`'s package environment, started on its first run.

        Its interpreter is the environment's (``argv[0]``), with ``site``,
        and it preloads the environment's modules; it lives in the slot's
        cgroup beside the slot's own zygote (the run's limits come on top
        of both, see :meth:`RunCgroup.prepare_run`).
        """
        env = spec.package_env
        assert env is not None
        zygote = slot.env_zygotes.get(env)
        if zygote is not None and zygote.alive():
            if zygote.runs < self.setup.recycle_after_runs:
                return zygote
            self._drop_env_zygote(slot, env)
        elif zygote is not None:
            self._drop_env_zygote(slot, env)
            self.restarts += 1
        setup = self.setup
        zygote = Zygote(
            spec.argv[0],
            spec.preload,
            _cgroup_files(slot),
            (slot.root_dir.name, setup.interpreter.read_paths(env), self._hidden()),
            setup.runs_root,
            setup.package_fd,
            package_env=env,
            cache_dir=setup.package_env_cache,
        )
        try:
            zygote.start()
        except OSError:
            return None
        slot.env_zygotes[env] = zygote
        return zygote

    def _drop_env_zygote(self, slot: Slot, env: str) -> None:
        """Stop the slot's zygote of `env` (in the background), and the slot's spare."""
        zygote = slot.env_zygotes.pop(env, None)
        if slot.spare_shape is not None and env in slot.spare_shape:
            slot.withdraw_spare()
        if zygote is not None:
            self._background.start(asyncio.to_thread(zygote.stop))

    def _ready(self, slot: Slot) -> bool:
        zygote = slot.zygote
        if zygote is not None and zygote.alive():
            if zygote.runs >= self.setup.recycle_after_runs:
                self._recycle(slot)
            return slot.zygote is not None
        self._schedule_restart(slot)
        return False

    def _recycle(self, slot: Slot) -> None:
        """Replace the slot's zygote (old one stopped in the background), and its spare."""
        slot.withdraw_spare()
        old, slot.zygote = slot.zygote, None
        self.start(slot)
        if old is not None:
            self._background.start(asyncio.to_thread(old.stop))

    def _schedule_restart(self, slot: Slot) -> None:
        """The slot's zygote died: its runs go cold until a new one is up."""
        if slot.restarting:
            return
        slot.restarting = True
        dead, slot.zygote = slot.zygote, None
        slot.withdraw_spare()
        if dead is not None:
            self._background.start(asyncio.to_thread(dead.stop))

        async def restart() -> None:
            try:
                await asyncio.sleep(RESTART_DELAY_SECONDS)
                self.start(slot)
                self.restarts += 1
            finally:
                slot.restarting = False

        self._background.start(restart())

    def _hidden(self) -> list[str]:
        return list(self.setup.interpreter.hidden_paths)


def _cgroup_files(slot: Slot) -> list[str]:
    return slot.cgroup.procs_files() if slot.cgroup is not None else []
