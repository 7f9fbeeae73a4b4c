"""Run cgroups, service side: discover a writable hierarchy, make slot groups, kill, remove.

cgroup v1 (memory and pids hierarchies, and cpuacct when it is mounted and
writable, as on these machines) or v2. The service keeps one group per
concurrent run ("slot"), nested under its own cgroup so runs stay inside
whatever limits the service itself has. Before each run it sets the slot's
memory and pids limits for that run; the run's processes are in the group
before the tool starts — forked there by the slot's zygote (warm path) or
moved there by the service before the launcher gets its config (cold
path) — and all are dead before the slot is used again.

A run is judged on what it alone did: the memory verdict is an OOM kill in
the group during the run (reclaiming the page cache earlier runs left is
not a limit hit), the memory limit leaves that cache out of what the
zygote holds (the run may use it up, the kernel reclaims it), and the CPU
time is the group's CPU accounting from the run's start.

Groups are reused rather than made per run because moving a process into a
v1 cgroup costs an RCU grace period (~12 ms measured here) whenever no other
move happened just before; a fork inside the group costs nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sandbox.jail import control_file

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PREFIX = "pagi-sandbox"


class CgroupUnavailable(Exception):
    """No writable hierarchy with the needed controllers."""


def _own_paths() -> dict[str, str]:
    """controller name (or "" for v2) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def discover_bases() -> dict[str, Path]:
    """Where this service may create groups: {"memory": dir, "pids": dir[, "cpuacct": dir]}
    or {"v2": dir}.

    Raises CgroupUnavailable with a reason when neither layout is writable.
    cpuacct (v1) is used when this service may make groups in it too.
    """
    own = _own_paths()
    if (CGROUP_ROOT / "memory" / "tasks").exists() and (CGROUP_ROOT / "pids" / "tasks").exists():
        bases = {
            name: CGROUP_ROOT / name / own.get(name, "/").lstrip("/") / GROUP_PREFIX
            for name in ("memory", "pids")
        }
        cpuacct = CGROUP_ROOT / "cpuacct" / own.get("cpuacct", "/").lstrip("/")
        if (cpuacct / "cpuacct.usage").exists() and os.access(cpuacct, os.W_OK):
            bases["cpuacct"] = cpuacct / GROUP_PREFIX
    elif (CGROUP_ROOT / "cgroup.controllers").exists():
        parent = CGROUP_ROOT / own.get("", "/").lstrip("/")
        available = (parent / "cgroup.controllers").read_text().split()
        if not {"memory", "pids"} <= set(available):
            raise CgroupUnavailable(f"cgroup v2 at {parent} lacks memory/pids controllers")
        bases = {"v2": parent / GROUP_PREFIX}
    else:
        raise CgroupUnavailable("no cgroup v1 memory+pids or v2 hierarchy mounted")
    try:
        for base in bases.values():
            base.mkdir(exist_ok=True)
        if "v2" in bases:
            (bases["v2"] / "cgroup.subtree_control").write_text("+memory +pids")
        else:
            use_hierarchy = bases["memory"] / "memory.use_hierarchy"
            if use_hierarchy.exists() and use_hierarchy.read_text().strip() != "1":
                use_hierarchy.write_text("1")
    except OSError as error:
        raise CgroupUnavailable(f"cannot create run groups: {error}") from error
    return bases


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_groups(bases: dict[str, Path]) -> dict[str, Path]:
    """A group per service process (``runner-PID-TOKEN``) holding its slot groups.

    Removes first the groups of service processes that no longer exist: what
    they left running is killed. Groups of live processes (another service
    or test on this host) are left alone.
    """
    for base in bases.values():
        for child in base.iterdir():
            parts = child.name.split("-")
            if child.is_dir() and parts[0] == "runner" and not pid_alive(int(parts[1])):
                for slot in [c for c in child.iterdir() if c.is_dir()]:
                    RunCgroup({}, "", dirs={"stale": slot}).remove()
                RunCgroup({}, "", dirs={"stale": child}).remove()
    name = f"runner-{os.getpid()}-{os.urandom(4).hex()}"
    owned = {controller: base / name for controller, base in bases.items()}
    for controller, directory in owned.items():
        directory.mkdir()
        if controller == "v2":
            (directory / "cgroup.subtree_control").write_text("+memory +pids")
    return owned


def _int_after(text: str, key: str) -> int:
    words = text.split()
    return int(words[words.index(key) + 1])


_PER_RUN_FILES: dict[str, tuple[str, ...]] = {
    "memory": ("memory.oom_control", "memory.usage_in_bytes", "memory.stat"),
    "pids": ("pids.events",),
    "cpuacct": ("cpuacct.usage",),
    "v2": ("pids.events", "memory.events", "memory.current", "memory.stat", "cpu.stat"),
}
"""Per controller: the files read around every run (held open)."""
LIMIT_SLACK_BYTES = 4 << 20
"""The memory limit is rewritten when what the zygote holds moved by more than this."""


def _stat_value(text: str, key: str) -> int:
    """The value of `key` in a ``key value`` listing (memory.stat, cpu.stat, ...); 0 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


class RunCgroup:
    """One slot's cgroup(s) (one per controller): limits per run, moves, kill, removal."""

    def __init__(
        self, bases: dict[str, Path], name: str, dirs: dict[str, Path] | None = None
    ) -> None:
        self.dirs = dirs or {controller: base / name for controller, base in bases.items()}
        self._pids_events_before = 0
        self._oom_kills_before = 0
        self._limits: tuple[int, int] | None = None
        self._memory_limit = 0
        self._counters_fresh = False
        self._procs_files = [str(directory / "cgroup.procs") for directory in self.dirs.values()]
        # Read around every run: held open (see control_file.KeptOpen).
        self._files = control_file.KeptOpen()
        self._file_paths = {
            (controller, name): str(directory / name)
            for controller, directory in self.dirs.items()
            for name in _PER_RUN_FILES.get(controller, ())
        }

    def _read(self, controller: str, name: str) -> str:
        return self._files.read(self._file_paths[(controller, name)])

    def create(self) -> None:
        """Make the (empty, unlimited) groups, and open the files used around every run.

        Opened now, so that the service's fd count does not grow with the
        first run of each slot.
        """
        for directory in self.dirs.values():
            directory.mkdir(exist_ok=True)
        for path in self._file_paths.values():
            self._files.open(path)

    def procs_files(self) -> list[str]:
        """The files to write a pid to, to move it in."""
        return list(self._procs_files)

    @property
    def accounts_cpu(self) -> bool:
        """Whether :meth:`cpu_seconds` measures the group (v1 cpuacct or v2)."""
        return "cpuacct" in self.dirs or "v2" in self.dirs

    def pids(self) -> set[int]:
        """Every process in the group(s) now."""
        pids: set[int] = set()
        for path in self._procs_files:
            try:
                pids.update(int(p) for p in control_file.read(path).split())
            except OSError:
                pass
        return pids

    def prepare_run(self, memory_bytes: int, processes: int) -> None:
        """Limits for the next run: `memory_bytes` and `processes` on top of the zygote.

        What is there is the slot's zygotes (and their shared pages), which the
        run's processes fork from, and page cache earlier runs left: file
        pages are not counted as the zygotes', so they cannot shrink the run's
        room (the kernel reclaims them as the run needs), nor widen it. The limits are
        written only when they moved; the counters are normally reset
        already, right after the previous run (:meth:`reset_counters`).
        """
        if not self._counters_fresh:
            self.reset_counters()
        resident = self._resident_bytes()
        if (
            self._limits is None
            or self._limits[1] != processes
            or abs(self._memory_limit - (resident + memory_bytes)) > LIMIT_SLACK_BYTES
        ):
            self._set_limits(resident + memory_bytes, processes)
            self._limits = (memory_bytes, processes)
        self._counters_fresh = False

    def _resident_bytes(self) -> int:
        """What the group holds now, less its file pages (page cache, mapped or not).

        The kernel reclaims file pages, those the zygotes map too (their
        shared libraries: 100 MiB and more for a package environment's),
        when a run needs room: counted as resident, the run could hold that
        much more than its own limit once they are reclaimed.
        """
        if "memory" in self.dirs:
            usage = int(self._read("memory", "memory.usage_in_bytes"))
            stat = self._read("memory", "memory.stat")
            file_pages = _stat_value(stat, "total_active_file") + _stat_value(
                stat, "total_inactive_file"
            )
        elif "v2" in self.dirs:
            usage = int(self._read("v2", "memory.current"))
            stat = self._read("v2", "memory.stat")
            file_pages = _stat_value(stat, "file")
        else:
            return 0
        return max(usage - max(file_pages, 0), 0)

    def _set_limits(self, memory_limit: int, processes: int) -> None:
        resident = len(self.pids())
        self._memory_limit = memory_limit
        limit = str(memory_limit)
        for controller, directory in self.dirs.items():
            if controller == "memory":
                swap = directory / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    # memsw must stay >= the memory limit: order the two writes.
                    try:
                        control_file.write(swap, limit)
                        control_file.write(directory / "memory.limit_in_bytes", limit)
                    except OSError:
                        control_file.write(directory / "memory.limit_in_bytes", limit)
                        control_file.write(swap, limit)
                else:
                    control_file.write(directory / "memory.limit_in_bytes", limit)
            elif controller == "pids":
                control_file.write(directory / "pids.max", str(resident + processes + 2))
            elif controller == "v2":
                control_file.write(directory / "memory.max", limit)
                control_file.write(directory / "memory.swap.max", "0")
                control_file.write(directory / "pids.max", str(resident + processes + 2))

    def reset_counters(self) -> None:
        """Note the limit-hit counters before the next run (the kernel never resets them)."""
        for controller in self.dirs:
            if controller == "memory":
                self._oom_kills_before = _int_after(
                    self._read("memory", "memory.oom_control"), "oom_kill"
                )
            elif controller == "pids":
                self._pids_events_before = _int_after(self._read("pids", "pids.events"), "max")
            elif controller == "v2":
                self._pids_events_before = _int_after(self._read("v2", "pids.events"), "max")
                self._oom_kills_before = _stat_value(self._read("v2", "memory.events"), "oom_kill")
        self._counters_fresh = True

    def add(self, pid: int) -> None:
        """Move `pid` in (blocking: may wait for an RCU grace period)."""
        for path in self.procs_files():
            control_file.write(Path(path), str(pid))

    def memory_limit_hit(self) -> bool:
        """Whether the OOM killer ended a process of the group during the run.

        That, not the kernel reclaiming memory at the limit (page cache,
        dentries: what ``memory.failcnt`` and v2's ``max`` event count), is
        a run that needed more memory than it may have.
        """
        try:
            if "memory" in self.dirs:
                oom_control = self._read("memory", "memory.oom_control")
                return _int_after(oom_control, "oom_kill") > self._oom_kills_before
            if "v2" in self.dirs:
                events = self._read("v2", "memory.events")
                return _stat_value(events, "oom_kill") > self._oom_kills_before
        except (OSError, ValueError):
            return False
        return False

    def cpu_seconds(self) -> float | None:
        """CPU time the group's processes used so far (None: not accounted here)."""
        try:
            if "cpuacct" in self.dirs:
                return int(self._read("cpuacct", "cpuacct.usage")) / 1e9
            if "v2" in self.dirs:
                return _stat_value(self._read("v2", "cpu.stat"), "usage_usec") / 1e6
        except (OSError, ValueError):
            return None
        return None

    def pids_limit_hit(self) -> bool:
        """Whether a fork or clone was refused by the pids limit during the run."""
        controller = next((name for name in ("pids", "v2") if name in self.dirs), None)
        if controller is None:
            return False
        try:
            refused = _int_after(self._read(controller, "pids.events"), "max")
            return refused > self._pids_events_before
        except (OSError, ValueError):
            return False

    def kill_all(self, keep: frozenset[int] = frozenset(), timeout: float = 2.0) -> bool:
        """SIGKILL every process but `keep` until only those remain; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            others = self.pids() - keep
            if not others:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in others:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    def remove(self) -> None:
        """Kill everything in the groups, then remove them."""
        self._files.close()
        self.kill_all()
        for directory in self.dirs.values():
            for _ in range(200):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last tasks exit
                    time.sleep(0.005)
