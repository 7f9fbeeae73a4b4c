"""Runs tools in the jail: take a slot, arm its jail, collect the run, release the slot.

Runs happen in slots (as many as run at once, :mod:`sandbox.host.slots`),
each with its own cgroup and zygotes (:mod:`sandbox.host.zygote_keeper`).
A run takes a free slot, preferring one whose jail was built ahead for it
(the slot's *spare*); else its jail is armed now
(:mod:`sandbox.host.jail_start`): the config pipe first carries the
:class:`~sandbox.jail.config.JailConfig`, the jail builds itself, and
waits. The run's :class:`~sandbox.jail.config.RunPayload` is then handed in
and what the run produced collected, on the service's own clock
(:mod:`sandbox.host.collect`). The result goes back at once; the slot is
emptied behind it and the jail of the same tool's next run built in it.

A tool with a network table reaches the network through the egress proxy
(:mod:`sandbox.egress`): its jail makes a network namespace of its own,
puts the proxy's listener on its loopback and sends it here before the
tool exists; the run's proxy session (:mod:`sandbox.host.egress_session`)
serves it under the run's rules and is closed when the run ends or is
killed.

Which layers are active is shown by probe runs at start
(:mod:`sandbox.host.probe`); a run whose required layers are not is
refused (fail closed). What ``/health`` shows is :mod:`sandbox.host.health`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.egress.proxy import EgressProxy
from sandbox.host.background import BackgroundWork
from sandbox.host.bpf import allowlist_size, compile_filter
from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.collect import BACKSTOP_SECONDS, WALL_GRACE_SECONDS, collect, run_payload
from sandbox.host.egress_session import egress_session
from sandbox.host.health import (
    EgressProxyState,
    IsolationReport,
    LockPinState,
    RunCounters,
    SeccompDetails,
    limit_scope,
    observable_denials,
    warm_path,
)
from sandbox.host.host_facts import HostFacts, find_host, release_host, slot_cgroup
from sandbox.host.interpreter import package_env_mount_problem
from sandbox.host.jail_config import jail_config
from sandbox.host.jail_start import JailStarter
from sandbox.host.layer_status import LayerTable, check_runnable
from sandbox.host.lock_pins import LockPins
from sandbox.host.probe import LayerProber, ProbeTarget
from sandbox.host.report import ReportReader
from sandbox.host.results import with_network
from sandbox.host.slots import RunPipes, Slot, SlotPool, run_shape
from sandbox.host.unavailable import RunnerUnavailable
from sandbox.host.zygote_keeper import ZygoteKeeper, ZygoteSetup
from sandbox.jail.config import JailConfig, RunPayload
from sandbox.jail.warm_command import parse_python_argv
from sandbox.spec import RunResult, RunSpec

__all__ = ["Runner", "RunnerUnavailable", "WALL_GRACE_SECONDS"]

JAIL_UID = 65534
JAIL_GID = 65534
WARM_RUNS_BEFORE_RECYCLE = 2000
DEFAULT_SLOTS = 8
"""Runs in flight at once; more wait for a free slot (the service admits fewer)."""


@dataclass(frozen=True)
class RunnerSettings:
    """How the runner was configured (see :class:`Runner`)."""

    python: str
    """The jail's interpreter, resolved."""
    python_as_named: str
    """As tools' argv name it (no path lookups)."""
    runs_root: Path
    warm_modules: tuple[str, ...]
    uid: int
    gid: int
    recycle_after_runs: int
    slots: int
    cpus: int


@dataclass
class _Rearm:
    """What the next run of a slot's last tool will likely need: its jail, built ahead."""

    spec: RunSpec
    config: JailConfig
    warm: bool


class Runner:
    """Runs a :class:`RunSpec` in the jail; see the module docstring."""

    def __init__(
        self,
        *,
        python_executable: str,
        state_dir: Path,
        warm_modules: Sequence[str] = (),
        jail_uid: int = JAIL_UID,
        jail_gid: int = JAIL_GID,
        warm_runs_before_recycle: int = WARM_RUNS_BEFORE_RECYCLE,
        slots: int = DEFAULT_SLOTS,
        egress_proxy: EgressProxy | None = None,
    ) -> None:
        self.settings = RunnerSettings(
            python=os.path.realpath(python_executable),
            python_as_named=python_executable,
            runs_root=Path(state_dir).resolve() / "sandbox-runs",
            warm_modules=tuple(warm_modules),
            uid=jail_uid,
            gid=jail_gid,
            recycle_after_runs=warm_runs_before_recycle,
            slots=max(1, slots),
            cpus=max(1, len(os.sched_getaffinity(0))),
        )
        self.egress_proxy = egress_proxy
        """Serves the runs of tools with a ``[tools.NAME.network]`` table (made at start)."""
        self._own_proxy = egress_proxy is None
        self._layers = LayerTable()
        self._pins = LockPins()
        self._notify = True
        self._slots: list[Slot] = []
        self._free_slots = SlotPool()
        self._host: HostFacts | None = None
        self._zygotes: ZygoteKeeper | None = None
        self._jails: JailStarter | None = None
        self._prober: LayerProber | None = None
        self._background = BackgroundWork()
        self._counters = RunCounters()
        self._policy_version = ""

    @property
    def runs_root(self) -> Path:
        """Where each slot's runs have their root (mounted in the run's own namespace)."""
        return self.settings.runs_root

    @property
    def slot_count(self) -> int:
        """Runs in flight at once."""
        return self.settings.slots

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Find the stdlib, make the run slots, probe every layer with a real jailed run."""
        settings = self.settings
        settings.runs_root.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.runs_root, 0o700)
        if self.egress_proxy is None:
            self.egress_proxy = EgressProxy()
        self._host = host = await find_host(settings.python, self._layers)
        self._pins.pin_shared()
        self._zygotes = ZygoteKeeper(
            ZygoteSetup(
                python=settings.python,
                warm_modules=settings.warm_modules,
                runs_root=settings.runs_root,
                interpreter=host.interpreter,
                package_fd=host.package_fd,
                package_env_cache=host.package_env_cache,
                recycle_after_runs=settings.recycle_after_runs,
            ),
            self._background,
        )
        self._jails = JailStarter(
            settings.python, settings.runs_root, host.package_fd, self._zygotes
        )
        self._free_slots = SlotPool()
        for index in range(settings.slots):
            root_dir = settings.runs_root / f"slot-{index}"
            root_dir.mkdir(mode=0o700, exist_ok=True)
            slot = Slot(index, slot_cgroup(host, index, self._layers), root_dir)
            self._slots.append(slot)
            self._zygotes.start(slot)
            self._free_slots.put(slot)
        target = ProbeTarget(
            settings.python, host.interpreter.prefix, settings.uid, bool(host.cgroup_bases)
        )
        # Through the attribute at each call: a test stands in its own runs.
        self._prober = LayerProber(
            self._layers, lambda spec, layers: self._execute(spec, layers), target, self._pins
        )
        await self._prober.probe()

    async def close(self) -> None:
        """Stop the zygotes, kill what is left in the slots, remove their cgroups."""
        if self._prober is not None:
            await self._prober.stop()
        await self._background.wait(timeout=10)
        for slot in self._slots:
            slot.withdraw_spare()
            if self._zygotes is not None:
                await self._zygotes.stop(slot)
            if slot.cgroup is not None:
                await asyncio.to_thread(slot.cgroup.remove)
        self._slots = []
        self._pins.release()
        if self.egress_proxy is not None:
            await self.egress_proxy.close()
            if self._own_proxy:
                self.egress_proxy = None
        host, self._host = self._host, None
        if host is not None:
            await release_host(host)

    async def reload(self, policy_version: str) -> None:
        """A new policy: recycle the zygotes so no state of the old ones carries over."""
        if policy_version == self._policy_version:
            return
        self._policy_version = policy_version
        if self._zygotes is not None:
            for slot in self._slots:
                self._zygotes.renew(slot)

    # ----------------------------------------------------------------- reporting

    def health(self) -> IsolationReport:
        """Every layer's status, seccomp and landlock details, the warm path, the proxy."""
        host = self._host
        controllers = set(host.cgroup_bases) if host and self._layers["cgroup"].active else set()
        return IsolationReport(
            layers=self._layers.items(),
            seccomp=SeccompDetails(
                filter_size=len(compile_filter(False, frozenset(), self._notify)) // 8,
                allowlist_size=allowlist_size(),
                refusals_counted=self._notify,
            ),
            landlock_abi=host.landlock_abi if host is not None else 0,
            # Host inodes a run reaches (the probe's host_inodes, and those any
            # process does): pinned with shared locks, so no lock there carries
            # anything from one run to another (see sandbox.host.lock_pins).
            lock_pins=LockPinState(self._pins.pinned, dict(self._pins.failed)),
            warm_path=warm_path(
                self._slots,
                self._counters,
                restarts=self._zygotes.restarts if self._zygotes is not None else 0,
                recycle_after_runs=self.settings.recycle_after_runs,
                preloaded_modules=self.settings.warm_modules,
            ),
            limit_scope=limit_scope(controllers),
            egress_proxy=EgressProxyState(
                self.egress_problem(),
                self.egress_proxy.stats() if self.egress_proxy is not None else {},
            ),
            denials_observable=observable_denials(self._notify),
        )

    def isolation_report(self) -> dict[str, Any]:
        """:meth:`health` as ``/health`` serves it: layer -> {"active", "reason"?, ...}, ..."""
        return self.health().to_json()

    def egress_problem(self) -> str | None:
        """Why runs cannot reach the egress proxy here, or None when they can.

        A networked run needs its own network namespace (the proxy's
        listener lives on its loopback) and the seccomp filter that lets it
        make TCP sockets and nothing else of the network: both must be shown
        active by the probe.
        """
        if self.egress_proxy is None or not self._started:
            return "the egress proxy is not running"
        missing = self.missing_layers(("netns", "seccomp"))
        if missing:
            return f"isolation layer(s) it needs are not active: {', '.join(missing)}"
        return None

    def package_env_mount_problem(self, path: str) -> str | None:
        """Why the package environment at `path` cannot be shown to a tool; None if it can
        (see :func:`sandbox.host.interpreter.package_env_mount_problem`)."""
        return package_env_mount_problem(path, self.runs_root)

    def missing_layers(self, required: Iterable[str]) -> list[str]:
        """The required layers (unknown names included) that are not active here."""
        return self._layers.missing(required)

    @property
    def _started(self) -> bool:
        return self._host is not None

    # ----------------------------------------------------------------- running

    async def run(self, spec: RunSpec) -> RunResult:
        """Run `spec` in the jail. Raises RunnerUnavailable only when the jail cannot be set up."""
        if not self._started:
            raise RunnerUnavailable("the runner is not started")
        egress = self.egress_problem() if spec.egress is not None else None
        check_runnable(spec, self._layers, egress)
        return await self._execute(spec, self._layers.active_optional())

    async def _execute(self, spec: RunSpec, layers: list[str]) -> RunResult:
        """Take a slot, arm its jail (or take the one built ahead), collect, release the slot."""
        started = time.perf_counter()
        python = self._python_call(spec)
        warm = spec.warm and python is not None
        slot = await self._free_slots.take(run_shape(spec, warm))
        cgroup = slot.cgroup if "cgroup" in layers else None
        rearm: _Rearm | None = None
        jail: RunPipes | None = None
        try:
            payload = run_payload(spec, python)
            config = self._config(spec, slot.root_dir, layers)
            jail = await self._jail_for(spec, config, slot, cgroup, warm)
            result = await self._run_in(spec, jail, payload, cgroup, started)
            if jail.via_zygote:
                rearm = _Rearm(spec, config, warm)
            return result
        finally:
            # The result goes back now; the slot is emptied and freed behind it,
            # with a jail for the next run of the same tool built in it.
            reader = jail.reader if jail is not None and slot.spare is not jail else None
            self._background.start(self._release(slot, rearm, cgroup, reader))

    def _python_call(self, spec: RunSpec) -> dict[str, object] | None:
        """How the jail's interpreter is called in `spec` (None: not a Python run)."""
        if spec.package_env is None:
            return parse_python_argv(list(spec.argv), self.settings.python_as_named)
        return parse_python_argv(list(spec.argv), spec.argv[0], site=True)

    async def _jail_for(
        self, spec: RunSpec, config: JailConfig, slot: Slot, cgroup: RunCgroup | None, warm: bool
    ) -> RunPipes:
        """The slot's spare if it was built for this run, else a jail armed now."""
        jail = slot.take_spare((warm, config))
        if jail is not None:
            self._counters.on_spares += 1
            return jail
        if slot.dirty:
            await slot.empty()
        return await self._arm(spec, config, slot, cgroup, warm)

    async def _run_in(
        self,
        spec: RunSpec,
        jail: RunPipes,
        payload: RunPayload,
        cgroup: RunCgroup | None,
        started: float,
    ) -> RunResult:
        """Collect the run in `jail`, through its egress proxy session when it has one."""
        cpus = self.settings.cpus
        if spec.egress is None:
            result = await collect(spec, jail, payload, cgroup, started, cpus)
            return self._counted(jail, result)
        assert self.egress_proxy is not None
        session = await egress_session(self.egress_proxy, spec, jail)
        try:
            result = self._counted(jail, await collect(spec, jail, payload, cgroup, started, cpus))
        finally:
            # After the run's end or its kill: every connection of the
            # run is cut, its listener closed.
            egress_report = await session.close()
        return with_network(result, egress_report, spec.tool)

    def _counted(self, jail: RunPipes, result: RunResult) -> RunResult:
        if jail.warm and jail.reader.report.ran_cold:
            self._counters.warm_started_cold += 1
        return result

    async def _arm(
        self, spec: RunSpec, config: JailConfig, slot: Slot, cgroup: RunCgroup | None, warm: bool
    ) -> RunPipes:
        assert self._jails is not None
        return await self._jails.arm(spec, config, slot, cgroup, warm)

    async def _release(
        self,
        slot: Slot,
        rearm: _Rearm | None,
        cgroup: RunCgroup | None,
        reader: ReportReader | None = None,
    ) -> None:
        """Empty the slot, build the jail of `rearm` (the last run's) in it, free it.

        Most runs repeat the tool of the run before, so the next one finds
        its jail built and waiting: only its payload is left to hand in.
        """
        try:
            if slot.spare is not None:
                return  # this request never reached its jail: the slot is as it was
            if reader is not None:
                # Init reports the status last and exits: then the run is gone.
                await asyncio.wait([reader.ended], timeout=BACKSTOP_SECONDS)
                reader.close()
            await slot.empty()
            if slot.cgroup is not None:
                slot.cgroup.reset_counters()  # off the next run's critical path
            if rearm is not None and self._started and self._zygotes is not None:
                if self._zygotes.for_run(slot, rearm.spec) is not None:
                    spare = await self._arm(rearm.spec, rearm.config, slot, cgroup, rearm.warm)
                    spare.key = (rearm.warm, rearm.config)
                    slot.spare, slot.spare_shape = spare, run_shape(rearm.spec, rearm.warm)
        except (OSError, RunnerUnavailable):
            pass  # the next run builds its jail itself, and fails closed if it must
        finally:
            self._free_slots.put(slot)

    def _config(self, spec: RunSpec, root_dir: Path, layers: list[str]) -> JailConfig:
        """The config of `spec`'s jail in the slot at `root_dir`, with the optional `layers`."""
        assert self._host is not None
        interpreter = self._host.interpreter
        return jail_config(
            spec,
            root_dir=root_dir,
            base_read_paths=interpreter.read_paths(spec.package_env),
            hidden_paths=list(interpreter.hidden_paths),
            uid=self.settings.uid,
            gid=self.settings.gid,
            pins=self._pins,
            notify=self._notify,
            landlock_abi=self._host.landlock_abi,
            layers=layers,
        )
