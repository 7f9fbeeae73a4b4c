"""Runs tools in the jail: the cold path (a launcher exec'd per run) and the warm path (a zygote).

Both paths hand the same :class:`~sandbox.jail.config.JailConfig` to the
same :func:`sandbox.jail.contain`; they differ only in who forks the jailed
process. Runs happen in slots (as many as run at once), each with its own
cgroup and a single-threaded zygote living in it. The service passes a
run's five fds to the slot's zygote, which forks a child that jails itself
and runs the code in its preloaded interpreter (warm) or execs the tool's
command, a fresh interpreter for Python code (cold). The
service never forks a jail itself (it has threads, and fork cost grows with
its memory); only when a zygote is down, or a tool has the host's network,
does it spawn the launcher (vfork + exec) and move it into the slot's cgroup.

A tool with a network table reaches the network through the egress proxy
(:mod:`sandbox.egress`): its jail makes a network namespace of its own
(on both paths), puts the proxy's listener on its loopback and sends it
here before the tool exists; the run's proxy session serves it under the
run's rules and is closed when the run ends or is killed.

A jail is built before its request: the config pipe first carries the
:class:`~sandbox.jail.config.JailConfig`, and only later the request's
:class:`~sandbox.jail.config.RunPayload`. A freed slot starts the jail of
its last run's tool at once (the slot's *spare*, a :class:`~sandbox.host.slots.RunPipes`), and a
run takes a free slot whose spare fits it (:class:`~sandbox.host.slots.SlotPool`); without
one, it starts its jail itself and hands the payload in right behind the
config.

The service supervises each run from outside the run's reach: its own
wall clock (:data:`WALL_GRACE_SECONDS` after the limit), the run's CPU time
from the slot's cgroup (:func:`~sandbox.host.supervision.watch_cpu`), the memory verdict from the
group's OOM kills, and what the jail's init reports; a run whose init died
is reported as such, with what the tool wrote.

Everything here is asynchronous on the event loop: pipes are read and
written with loop readers/writers, never with a blocking call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pagi.logging import log_event
from sandbox.egress.netns_listener import ListenerError, check_listener
from sandbox.egress.proxy import EgressProxy, EgressSession
from sandbox.host.bpf import allowlist_size, compile_filter
from sandbox.host.bytecode import PACKAGE_ROOT, compile_jail_bytecode, launcher_path
from sandbox.host.cgroup_service import (
    CgroupUnavailable,
    RunCgroup,
    discover_bases,
    owner_groups,
)
from sandbox.host.jail_config import jail_config
from sandbox.host.lock_pins import LockPins
from sandbox.host.pipes import output_of, read_capped, write_all, write_now
from sandbox.host.probe import PROBE_PROGRAM, evaluate_probe, host_inodes, probe_reported
from sandbox.host.report import ReportReader, report_channel
from sandbox.host.results import RunOutput, output_files, run_result, with_network
from sandbox.host.slots import RunPipes, Slot, SlotPool, run_shape
from sandbox.host.supervision import kill, reap, watch_cpu
from sandbox.host.zygote import Zygote
from sandbox.jail import LAYERS
from sandbox.jail.config import OPTIONAL_LAYERS, JailConfig, RunPayload
from sandbox.jail.landlock import abi_version
from sandbox.jail.mountns import JAIL_OWN_PATHS, beneath
from sandbox.jail.netns import PROXY_PORT
from sandbox.jail.protocol import frame
from sandbox.jail.warm_command import parse_python_argv
from sandbox.spec import LimitName, RunResult, RunSpec

logger = logging.getLogger(__name__)

JAIL_UID = 65534
JAIL_GID = 65534
WALL_GRACE_SECONDS = 0.5
"""The service's own clock: a run without a status this long after its wall limit
(counted from the payload's hand-over) is killed from outside and times out."""
BACKSTOP_SECONDS = 3.0
"""How long a killed run's pipes, or an ended run's init, may take to close."""
LISTENER_WAIT_SECONDS = 30.0
"""How long a networked run's jail may take to send its proxy listener (it does so
early in its build, before any tool code): past it the run fails closed."""
WARM_RUNS_BEFORE_RECYCLE = 2000
PROBE_WALL_SECONDS = 30
"""Generous: the probe must not fail for a machine busy at start-up."""
PROBE_ATTEMPTS = 3
PROBE_RETRY_SECONDS = 1.0
"""Wait before the second probe (doubling for later ones, up to REPROBE_MAX_SECONDS)."""
REPROBE_MAX_SECONDS = 60.0
RELEASE_PAUSES = (0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
"""Waits for a finished run's last processes to leave its slot before they are killed."""
DEFAULT_SLOTS = 8
"""Runs in flight at once; more wait for a free slot (the service admits fewer)."""
SYSTEM_READ_PATHS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
"""Always visible read-only in the jail (besides the interpreter prefix and policy paths)."""


class RunnerUnavailable(Exception):
    """The jail cannot be set up for this run: nothing ran (the service answers 503)."""

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


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
        self.python = os.path.realpath(python_executable)
        self._python_as_named = python_executable  # as tools' argv name it (no path lookups)
        self.runs_root = Path(state_dir).resolve() / "sandbox-runs"
        self.warm_modules = tuple(warm_modules)
        self.uid = jail_uid
        self.gid = jail_gid
        self.warm_runs_before_recycle = warm_runs_before_recycle
        self._cpus = max(1, len(os.sched_getaffinity(0)))
        self.slot_count = max(1, slots)
        self._slots: list[Slot] = []
        self._free_slots: SlotPool | None = None
        self._layers: dict[str, dict[str, Any]] = {
            name: {"active": False, "reason": "not probed yet"} for name in LAYERS
        }
        self._interpreter_prefix = ""
        self._hidden_paths: list[str] = []
        self._cgroup_bases: dict[str, Path] = {}
        self._landlock_abi = 0
        self._notify = True
        self._zygote_restarts = 0
        self._runs_on_spares = 0
        self._warm_runs_started_cold = 0
        self._background: set[asyncio.Task[None]] = set()
        self._policy_version = ""
        self._started = False
        self._reprobe: asyncio.Task[None] | None = None
        self._pins = LockPins()
        self._package_fd = -1
        self._own_proxy = egress_proxy is None
        self.egress_proxy = egress_proxy
        """Serves the runs of tools with a ``[tools.NAME.network]`` table (made at start)."""
        self._package_env_cache = ""

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Find the stdlib, make the run slots, probe every layer with a real jailed run."""
        self.runs_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runs_root, 0o700)
        if self.egress_proxy is None:
            self.egress_proxy = EgressProxy()
        if not self._package_env_cache:
            # Absolute, and naming nothing of the service's state: the modules a zygote
            # preloads keep the path in memory every warm run of it inherits (a
            # relative one they make absolute, with the zygote's working dir).
            self._package_env_cache = tempfile.mkdtemp(prefix="pagi-package-envs-")
        if self._package_fd < 0:
            self._package_fd = os.open(PACKAGE_ROOT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        await asyncio.to_thread(self._inspect_interpreter)
        await asyncio.to_thread(compile_jail_bytecode)
        try:
            bases = await asyncio.to_thread(discover_bases)
            self._cgroup_bases = await asyncio.to_thread(owner_groups, bases)
        except (CgroupUnavailable, OSError) as error:
            self._cgroup_bases = {}
            self._layers["cgroup"] = {"active": False, "reason": str(error)}
        self._landlock_abi = abi_version()
        self._pins.pin_shared()
        self._free_slots = SlotPool()
        for index in range(self.slot_count):
            root_dir = self.runs_root / f"slot-{index}"
            root_dir.mkdir(mode=0o700, exist_ok=True)
            slot = Slot(index, self._slot_cgroup(index), root_dir)
            self._slots.append(slot)
            self._start_zygote(slot)
            self._free_slots.put(slot)
        self._started = True
        await self._probe()

    def _slot_cgroup(self, index: int) -> RunCgroup | None:
        if not self._cgroup_bases:
            return None
        cgroup = RunCgroup(self._cgroup_bases, f"slot-{index}-{secrets.token_hex(4)}")
        try:
            cgroup.create()
        except OSError as error:
            self._layers["cgroup"] = {"active": False, "reason": f"cannot create: {error}"}
            return None
        return cgroup

    async def close(self) -> None:
        """Stop the zygotes, kill what is left in the slots, remove their cgroups."""
        if self._reprobe is not None:
            self._reprobe.cancel()
            await asyncio.gather(self._reprobe, return_exceptions=True)
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)
        for slot in self._slots:
            slot.withdraw_spare()
            zygotes = [slot.zygote, *slot.env_zygotes.values()]
            slot.zygote, slot.env_zygotes = None, {}
            for zygote in zygotes:
                if zygote is not None:
                    await asyncio.to_thread(zygote.stop)
            if slot.cgroup is not None:
                await asyncio.to_thread(slot.cgroup.remove)
        if self._cgroup_bases:
            await asyncio.to_thread(RunCgroup({}, "", dirs=dict(self._cgroup_bases)).remove)
        self._slots = []
        self._pins.release()
        if self.egress_proxy is not None:
            await self.egress_proxy.close()
            if self._own_proxy:
                self.egress_proxy = None
        if self._package_fd >= 0:
            os.close(self._package_fd)
            self._package_fd = -1
        if self._package_env_cache:
            await asyncio.to_thread(shutil.rmtree, self._package_env_cache, True)
            self._package_env_cache = ""
        self._started = False

    async def reload(self, policy_version: str) -> None:
        """A new policy: recycle the zygotes so no state of the old ones carries over."""
        if policy_version == self._policy_version:
            return
        self._policy_version = policy_version
        for slot in self._slots:
            self._recycle_zygote(slot)
            for env in list(slot.env_zygotes):
                self._drop_env_zygote(slot, env)  # started again by the next run that needs it

    def _inspect_interpreter(self) -> None:
        output = subprocess.run(
            [
                self.python,
                "-I",
                "-S",
                "-c",
                "import sys, sysconfig; "
                "print(sys.base_prefix); print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={},
            timeout=30,
        ).stdout.split("\n")
        self._interpreter_prefix = output[0]
        self._hidden_paths = [output[1]]  # site-packages: only the stdlib is readable

    def _base_read_paths(self) -> list[str]:
        """What every run may read: the interpreter's prefix and the system paths."""
        return [self._interpreter_prefix, *SYSTEM_READ_PATHS]

    def _template_read_paths(self, package_env: str | None) -> list[str]:
        """What every run of a zygote may read: the base paths, and its package environment."""
        base = self._base_read_paths()
        return base if package_env is None else [*base, os.path.realpath(package_env)]

    def _start_zygote(self, slot: Slot) -> None:
        cgroup_files = slot.cgroup.procs_files() if slot.cgroup is not None else []
        template = (slot.root_dir.name, self._base_read_paths(), self._hidden_paths)
        zygote = Zygote(
            self.python,
            self.warm_modules,
            cgroup_files,
            template,
            self.runs_root,
            self._package_fd,
        )
        try:
            zygote.start()
        except OSError:
            slot.zygote = None
            return
        slot.zygote = zygote

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
            if zygote.runs < self.warm_runs_before_recycle:
                return zygote
            self._drop_env_zygote(slot, env)
        elif zygote is not None:
            self._drop_env_zygote(slot, env)
            self._zygote_restarts += 1
        cgroup_files = slot.cgroup.procs_files() if slot.cgroup is not None else []
        template = (slot.root_dir.name, self._template_read_paths(env), self._hidden_paths)
        zygote = Zygote(
            spec.argv[0],
            spec.preload,
            cgroup_files,
            template,
            self.runs_root,
            self._package_fd,
            package_env=env,
            cache_dir=self._package_env_cache,
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
            self._in_background(asyncio.to_thread(zygote.stop))

    def _zygote_for(self, slot: Slot, spec: RunSpec) -> Zygote | None:
        """The zygote that forks `spec`'s jail in `slot`; None: the service spawns a launcher."""
        if spec.network:
            return None  # it must not inherit a zygote's empty network namespace
        if spec.package_env is not None:
            return self._env_zygote(slot, spec)
        return slot.zygote if self._zygote_ready(slot) else None

    def _recycle_zygote(self, slot: Slot) -> None:
        """Replace the slot's zygote (old one stopped in the background), and its spare."""
        slot.withdraw_spare()
        old, slot.zygote = slot.zygote, None
        self._start_zygote(slot)
        if old is not None:
            self._in_background(asyncio.to_thread(old.stop))

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------------- reporting

    def isolation_report(self) -> dict[str, Any]:
        """Layer -> {"active", "reason"?, ...}, seccomp and landlock details, warm path state."""
        report: dict[str, Any] = {name: dict(state) for name, state in self._layers.items()}
        report["seccomp"].update(
            {
                "filter_size": len(compile_filter(False, frozenset(), self._notify)) // 8,
                "allowlist_size": allowlist_size(),
                "refusals_counted": self._notify,
            }
        )
        report["landlock"]["abi"] = self._landlock_abi
        # Host inodes a run reaches (the probe's host_inodes, and those any
        # process does): pinned with shared locks, so no lock there carries
        # anything from one run to another (see sandbox.host.lock_pins).
        report["mountns"]["lock_pins"] = {
            "pinned": self._pins.pinned,
            "failed": dict(self._pins.failed),
        }
        ready = sum(1 for slot in self._slots if slot.zygote is not None and slot.zygote.alive())
        report["warm_path"] = {
            "state": "ready"
            if ready == len(self._slots) and ready
            else ("degraded_cold_fallback" if ready else "cold_fallback"),
            "zygotes_ready": ready,
            "slots": len(self._slots),
            "restarts": self._zygote_restarts,
            "recycle_after_runs": self.warm_runs_before_recycle,
            "jails_built_ahead": sum(1 for slot in self._slots if slot.spare is not None),
            "runs_on_jails_built_ahead": self._runs_on_spares,
            # Warm runs whose tool's locale needed a fresh interpreter (warm_prepare.prepare).
            "warm_runs_started_cold": self._warm_runs_started_cold,
            "preloaded_modules": list(self.warm_modules),
            # Started in a slot by the first run there of a tool with that environment.
            "package_env_zygotes": {
                env: sum(
                    1
                    for slot in self._slots
                    if env in slot.env_zygotes and slot.env_zygotes[env].alive()
                )
                for env in sorted({env for slot in self._slots for env in slot.env_zygotes})
            },
        }
        report["limit_scope"] = self._limit_scope()
        problem = self.egress_problem()
        report["egress_proxy"] = {
            "available": problem is None,
            **({"reason": problem} if problem is not None else {}),
            **(self.egress_proxy.stats() if self.egress_proxy is not None else {}),
        }
        report["denials_observable"] = self._observable_denials()
        return report

    def _observable_denials(self) -> dict[str, dict[str, Any]]:
        """Which kinds of refusal a result's ``denials`` can name on this host, and why not."""
        seccomp = (
            "each refused syscall, with its decisive arguments, from the jail's init"
            " (seccomp user notification)"
            if self._notify
            else "no seccomp user notification here: refused syscalls answer EPERM unseen"
        )
        return {
            "seccomp": {"observed": self._notify, "how": seccomp},
            "limit": {
                "observed": True,
                "how": "the limit that stopped the run, seen by the service (memory and"
                " processes only through the run's cgroup; see limit_scope)",
            },
            "landlock": {
                "observed": False,
                "how": "the kernel answers EACCES inside the syscall; its audit records"
                " (Landlock ABI 7) are not read, so nothing is reported rather than guessed",
            },
            "mount": {
                "observed": False,
                "how": "a write to a read-only mount (EROFS) or an exec from a noexec one"
                " (EACCES) is answered inside the syscall, where no supervisor sees it",
            },
        }

    def _limit_scope(self) -> dict[str, str]:
        """What each limit bounds here: the whole run (a cgroup) or each process (an rlimit)."""
        controllers = set(self._cgroup_bases) if self._layers["cgroup"]["active"] else set()

        def scope(controller: str, fallback: str) -> str:
            return "run" if controller in controllers or "v2" in controllers else fallback

        return {
            "wall_seconds": "run",
            "cpu_seconds": scope("cpuacct", "process"),
            "memory_bytes": scope("memory", "process"),
            "processes": scope("pids", "user_namespace"),
        }

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
        """Why the package environment at `path` cannot be shown to a tool; None if it can.

        It is mounted read-only at its own path, so it must be an absolute,
        existing directory outside the jail's own mounts (its /tmp, /proc,
        /dev, working dir) and outside the service's run roots.
        """
        real = os.path.realpath(path) if path else ""
        if not real.startswith("/") or not os.path.isdir(real):
            return f"{path!r} is not a directory"
        if beneath(real, list(JAIL_OWN_PATHS)):
            return f"{real} is under a path the jail mounts itself ({', '.join(JAIL_OWN_PATHS)})"
        if beneath(real, [str(self.runs_root)]) or beneath(str(self.runs_root), [real]):
            return f"{real} overlaps the sandbox's run roots ({self.runs_root})"
        return None

    def missing_layers(self, required: Iterable[str]) -> list[str]:
        """The required layers (unknown names included) that are not active here."""
        return sorted(
            name for name in set(required) if not self._layers.get(name, {}).get("active", False)
        )

    # ----------------------------------------------------------------- running

    async def run(self, spec: RunSpec) -> RunResult:
        """Run `spec` in the jail. Raises RunnerUnavailable only when the jail cannot be set up."""
        if not self._started:
            raise RunnerUnavailable("the runner is not started")
        missing = self.missing_layers(spec.required_layers)
        if missing:
            raise RunnerUnavailable(
                f"required isolation layers unavailable: {', '.join(missing)}", layer=missing[0]
            )
        structural = self.missing_layers(set(LAYERS) - OPTIONAL_LAYERS)
        if structural:
            raise RunnerUnavailable(
                f"the jail cannot be built here: {', '.join(structural)} unavailable",
                layer=structural[0],
            )
        if spec.egress is not None:
            problem = self.egress_problem()
            if problem is not None:
                raise RunnerUnavailable(f"egress: {problem}", layer="netns")
        if spec.network and "netns" in spec.required_layers:
            raise RunnerUnavailable(
                f"tool {spec.tool!r} has network access, so it cannot run in its own"
                " network namespace (netns), which the policy requires",
                layer="netns",
            )
        layers = [name for name in OPTIONAL_LAYERS if self._layers[name]["active"]]
        return await self._execute(spec, layers)

    async def _execute(self, spec: RunSpec, layers: list[str]) -> RunResult:
        started = time.perf_counter()
        assert self._free_slots is not None
        if spec.package_env is None:
            python = parse_python_argv(list(spec.argv), self._python_as_named)
        else:
            python = parse_python_argv(list(spec.argv), spec.argv[0], site=True)
        warm = spec.warm and python is not None
        shape = run_shape(spec, warm)
        slot = await self._free_slots.take(shape)
        cgroup = slot.cgroup if "cgroup" in layers else None
        rearm: tuple[RunSpec, JailConfig, bool] | None = None
        jail: RunPipes | None = None
        try:
            for name in spec.files:
                _check_file_name(name)
            config = self._config(spec, slot.root_dir, cgroup, layers)
            jail = slot.take_spare((warm, config))
            if jail is not None:
                self._runs_on_spares += 1
            else:
                if slot.dirty:
                    await self._empty(slot)
                jail = await self._arm(spec, config, slot, cgroup, warm)
            payload = RunPayload(argv=list(spec.argv), files=dict(spec.files), python=python)
            session = await self._egress_session(spec, jail) if spec.egress is not None else None
            try:
                result = await self._collect(spec, jail, payload, cgroup, started)
            finally:
                # After the run's end or its kill: every connection of the
                # run is cut, its listener closed.
                egress_report = await session.close() if session is not None else None
            if egress_report is not None:
                result = with_network(result, egress_report, spec.tool)
            if jail.via_zygote:
                rearm = (spec, config, warm)
            return result
        finally:
            # The result goes back now; the slot is emptied and freed behind it,
            # with a jail for the next run of the same tool built in it.
            reader = jail.reader if jail is not None and slot.spare is not jail else None
            self._in_background(self._release(slot, rearm, cgroup, reader))

    async def _egress_session(self, spec: RunSpec, jail: RunPipes) -> EgressSession:
        """The proxy session of `spec`'s run, on the listener its jail made (fail closed).

        The jail sends the listener while it builds itself, before its tool
        exists; a spare built ahead holds it until its run comes. The rules
        are the run's own (its policy version), not the spare's.
        """
        assert spec.egress is not None and self.egress_proxy is not None
        reader = jail.reader
        await asyncio.wait(
            [reader.listener_arrived, reader.finished],
            timeout=LISTENER_WAIT_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
        listener = reader.take_listener()
        if listener is None:
            jail.withdraw()
            failed = reader.report.failed_layer
            reason = f"{failed[0]}: {failed[1]}" if failed else "the jail sent no listener"
            raise RunnerUnavailable(f"egress proxy listener: {reason}", layer="netns")
        try:
            check_listener(listener, PROXY_PORT)
        except ListenerError as error:
            listener.close()
            jail.withdraw()
            raise RunnerUnavailable(f"egress proxy listener: {error}", layer="netns") from None
        return self.egress_proxy.open_session(
            listener,
            spec.egress,
            request_id=spec.request_id,
            tool=spec.tool,
            policy_version=spec.policy_version,
        )

    async def _release(
        self,
        slot: Slot,
        rearm: tuple[RunSpec, JailConfig, bool] | None,
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
            await self._empty(slot)
            if slot.cgroup is not None:
                slot.cgroup.reset_counters()  # off the next run's critical path
            if rearm is not None and self._started and self._zygote_for(slot, rearm[0]):
                spec, config, warm = rearm
                slot.spare = await self._arm(spec, config, slot, cgroup, warm)
                slot.spare.key = (warm, config)
                slot.spare_shape = run_shape(spec, warm)
        except (OSError, RunnerUnavailable):
            pass  # the next run builds its jail itself, and fails closed if it must
        finally:
            assert self._free_slots is not None
            self._free_slots.put(slot)

    async def _empty(self, slot: Slot) -> None:
        """Kill what is left of earlier runs in the slot (normally nothing)."""
        slot.dirty = False
        if slot.cgroup is None:
            return
        try:
            # A finished run's init (or the launcher above it) is exiting:
            # give it a moment to leave the group before killing.
            for pause in RELEASE_PAUSES:
                if not slot.cgroup.pids() - slot.zygote_pid():
                    return
                await asyncio.sleep(pause)
            await asyncio.to_thread(slot.cgroup.kill_all, slot.zygote_pid())
        except OSError:
            pass  # prepare_run retries, and fails the run closed if it must

    def _config(
        self,
        spec: RunSpec,
        root_dir: Path,
        cgroup: RunCgroup | None,
        layers: list[str],
    ) -> JailConfig:
        return jail_config(
            spec,
            root_dir=root_dir,
            base_read_paths=self._template_read_paths(spec.package_env),
            hidden_paths=self._hidden_paths,
            uid=self.uid,
            gid=self.gid,
            pins=self._pins,
            notify=self._notify,
            landlock_abi=self._landlock_abi,
            layers=layers,
        )

    def _zygote_ready(self, slot: Slot) -> bool:
        zygote = slot.zygote
        if zygote is not None and zygote.alive():
            if zygote.runs >= self.warm_runs_before_recycle:
                self._recycle_zygote(slot)
            return slot.zygote is not None
        self._schedule_zygote_restart(slot)
        return False

    def _schedule_zygote_restart(self, slot: Slot) -> None:
        """The slot's zygote died: its runs go cold until a new one is up."""
        if slot.restarting:
            return
        slot.restarting = True
        dead, slot.zygote = slot.zygote, None
        slot.withdraw_spare()
        if dead is not None:
            self._in_background(asyncio.to_thread(dead.stop))

        async def restart() -> None:
            try:
                await asyncio.sleep(0.1)
                self._start_zygote(slot)
                self._zygote_restarts += 1
            finally:
                slot.restarting = False

        self._in_background(restart())

    async def _arm(
        self,
        spec: RunSpec,
        config: JailConfig,
        slot: Slot,
        cgroup: RunCgroup | None,
        warm: bool,
    ) -> RunPipes:
        """Start a jail for `config` in `slot`; it builds itself, then waits for its payload."""
        if cgroup is not None:
            try:
                cgroup.prepare_run(spec.limits.memory_bytes, spec.limits.processes)
            except OSError as error:
                raise RunnerUnavailable(f"cgroup: {error}", layer="cgroup") from error
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        config_r, config_w = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = report_channel()
        child_ends = [stdin_r, stdout_w, stderr_w, config_r, report_w]
        reader = ReportReader(asyncio.get_running_loop(), report_r)
        jail = RunPipes(stdin_w, stdout_r, stderr_r, config_w, reader)
        # Both paths go through the slot's zygote when it is up: both fork
        # from it (born in the slot's cgroup), a cold run then execs the
        # tool's command inside the jail. A tool with network must not
        # inherit the zygote's empty network namespace: the service spawns
        # its launcher itself.
        try:
            zygote = self._zygote_for(slot, spec)
            if zygote is not None:
                try:
                    zygote.submit(child_ends, warm)
                    jail.via_zygote = True
                    jail.warm = warm
                except OSError:
                    if spec.package_env is not None:
                        self._drop_env_zygote(slot, spec.package_env)
                    else:
                        self._schedule_zygote_restart(slot)
            if not jail.via_zygote:
                launch = launcher_path(self._package_fd)
                jail.process = subprocess.Popen(
                    [self.python, "-I", "-S", launch, str(config_r), str(report_w)],
                    stdin=stdin_r,
                    stdout=stdout_w,
                    stderr=stderr_w,
                    pass_fds=(config_r, report_w, self._package_fd),
                    env={},
                    cwd=self.runs_root,  # the run's root is named relative to it
                    start_new_session=True,
                )
        except OSError as error:
            jail.withdraw()
            raise RunnerUnavailable(f"cannot start the jail: {error}") from error
        finally:
            for fd in child_ends:
                os.close(fd)
        if jail.process is not None and cgroup is not None:
            # Moved in while the launcher's interpreter starts; it reads its
            # config (and so goes on) only after this.
            try:
                await asyncio.to_thread(cgroup.add, jail.process.pid)
            except OSError as error:
                kill(jail.process.pid)
                jail.withdraw()
                await reap(jail.process)
                raise RunnerUnavailable(f"cgroup: {error}", layer="cgroup") from error
        # A frame of a few KiB: the pipe takes it at once.
        rest = write_now(config_w, frame(config.to_bytes()))
        if rest:
            await write_all(asyncio.get_running_loop(), config_w, rest, close=False)
        return jail

    async def _collect(
        self,
        spec: RunSpec,
        jail: RunPipes,
        payload: RunPayload,
        cgroup: RunCgroup | None,
        started: float,
    ) -> RunResult:
        """Hand `payload` (and stdin) to the waiting jail; gather what the run produced.

        The service keeps its own clock, out of the run's reach: a run whose
        status has not come :data:`WALL_GRACE_SECONDS` after its wall limit
        is killed from here and reported as timed out, whatever became of
        the jail's init.
        """
        loop = asyncio.get_running_loop()
        process = jail.process
        report = jail.reader.report
        stopped: list[LimitName | None] = []
        """The service itself ended the run: why (the first reason; None: no limit)."""

        def stop_run(reason: LimitName | None) -> None:
            if stopped:
                return
            stopped.append(reason)
            if report.jail_pid is not None and not jail.reader.ended.done():
                kill(report.jail_pid)  # not once it ended: its pid is free again
            if process is not None:
                kill(process.pid)
            # Killing init, or the launcher above it (init's parent-death
            # signal), kills the whole pid namespace; the slot's cgroup is
            # emptied after.

        writers = []
        for fd, data in ((jail.config_w, frame(payload.to_bytes())), (jail.stdin_w, spec.stdin)):
            # Usually fits in the pipe: written (and closed) right away, the
            # jail need not wait for the loop's next turn; the rest goes
            # asynchronously.
            rest = write_now(fd, data)
            if rest:
                writers.append(loop.create_task(write_all(loop, fd, rest)))
            else:
                os.close(fd)
        cap = spec.limits.output_bytes
        stdout_task = loop.create_task(
            read_capped(loop, jail.stdout_r, cap, lambda: stop_run("output"))
        )
        stderr_task = loop.create_task(
            read_capped(loop, jail.stderr_r, cap, lambda: stop_run("output"))
        )
        report_task = jail.reader.finished
        outputs = [stdout_task, stderr_task, report_task]
        watcher = None
        if cgroup is not None and cgroup.accounts_cpu:
            watcher = loop.create_task(
                watch_cpu(cgroup, spec.limits.cpu_seconds, self._cpus, stop_run)
            )
        await asyncio.wait(outputs, timeout=spec.limits.wall_seconds + WALL_GRACE_SECONDS)
        if not report_task.done():
            stop_run("wall_time")
        if not all(task.done() for task in outputs):
            stop_run(None)  # the status came, but something still holds the run's pipes
            await asyncio.wait(outputs, timeout=BACKSTOP_SECONDS)
        tasks = [*writers, *outputs, *([watcher] if watcher is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if process is not None:
            await reap(process)

        if report.failed_layer is not None:
            layer, reason = report.failed_layer
            raise RunnerUnavailable(f"isolation layer {layer} failed: {reason}", layer=layer)
        files = await output_files(spec, jail.reader)
        gathered = RunOutput(
            *output_of(stdout_task),
            *output_of(stderr_task),
            stopped=bool(stopped),
            stopped_for=stopped[0] if stopped else None,
            out_of_memory=cgroup is not None and cgroup.memory_limit_hit(),
            files=files,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        result = run_result(spec, report, gathered, cgroup, warm=jail.warm)
        if result.supervisor_died:
            # The OOM killer aside, init dies only by a fault of its own: the
            # tool's processes went with it (the kernel ends the namespace).
            log_event(logger, "jail_supervisor_died", logging.WARNING, tool=spec.tool)
        if jail.warm and report.ran_cold:
            self._warm_runs_started_cold += 1
        return result

    # ----------------------------------------------------------------- probing

    async def _probe(self) -> None:
        """Prove each layer active with a real jailed run that inspects itself from inside.

        A probe run that reports nothing (killed at its wall limit on a
        loaded machine, a process that could not start) proves nothing
        either way: it is retried a few times, then again in the background
        while the jail's structure is not shown to work. Only what a probe
        showed is ever reported active.
        """
        for attempt in range(PROBE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(PROBE_RETRY_SECONDS * attempt)
            if await self._probe_once():
                break
        if self.missing_layers(set(LAYERS) - OPTIONAL_LAYERS) and self._reprobe is None:
            self._reprobe = asyncio.get_running_loop().create_task(self._reprobe_later())

    async def _reprobe_later(self) -> None:
        """Probe again, backing off, until the jail's structure is shown to work."""
        delay = PROBE_RETRY_SECONDS
        try:
            while self.missing_layers(set(LAYERS) - OPTIONAL_LAYERS):
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPROBE_MAX_SECONDS)
                await self._probe_once()
        finally:
            self._reprobe = None

    async def _probe_once(self) -> bool:
        """One probe; False when its run reported nothing, so that nothing is known."""
        optional = [name for name in OPTIONAL_LAYERS if name != "cgroup" or self._cgroup_bases]
        refused: dict[str, dict[str, Any]] = {}
        for _ in range(len(OPTIONAL_LAYERS) + 1):
            spec = RunSpec(
                tool="probe",
                argv=(self.python, "-I", "-S", "-c", PROBE_PROGRAM),
                readable_paths=("/proc",),
                limits={"wall_seconds": PROBE_WALL_SECONDS},  # type: ignore[arg-type]
            )
            try:
                result = await self._execute(spec, optional)
            except RunnerUnavailable as error:
                if error.layer is None:
                    self._nothing_proven(f"probe run failed: {error}")
                    return False
                refused[error.layer] = {"active": False, "reason": str(error)}
                if error.layer in optional:
                    optional.remove(error.layer)
                    continue
                for name in LAYERS:
                    self._layers[name] = refused.get(
                        name, {"active": False, "reason": f"jail broken at {error.layer}"}
                    )
                return True
            if not probe_reported(result):
                self._nothing_proven(
                    f"probe run reported nothing: exit={result.exit_code}"
                    f" signal={result.signal} limit={result.limit_hit}"
                    f" stderr (the probe's): {result.stderr[-300:]!r}"
                )
                return False
            verdicts = evaluate_probe(
                result,
                host_namespaces(),
                self.uid,
                optional,
                str(Path(__file__).parent),
                host_inodes(self.python, self._interpreter_prefix),
            )
            for name, verdict in verdicts.items():
                self._layers[name] = verdict if verdict["active"] else refused.get(name, verdict)
            self._pins.pin_paths(verdicts["mountns"].get("host_inodes", []))
            return True
        return True

    def _nothing_proven(self, reason: str) -> None:
        retry = "; probing again" if self._started else ""
        for name in LAYERS:
            self._layers[name] = {"active": False, "reason": reason + retry}


def host_namespaces() -> dict[str, str]:
    """This process's namespace ids, to compare with the jail's."""
    return {
        name: os.readlink(f"/proc/self/ns/{name}")
        for name in ("user", "pid", "net", "mnt", "ipc", "uts")
    }


def _check_file_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise RunnerUnavailable(f"invalid file name for the workdir: {name!r}")
    if "\0" in name or len(name) > 255:
        raise RunnerUnavailable(f"invalid file name for the workdir: {name!r}")
