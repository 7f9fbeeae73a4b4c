"""Run cgroups, service side: discover a writable hierarchy, make slot groups, kill, remove.

cgroup v1 (memory and pids hierarchies, as on these machines) or v2. The
service (root) keeps one group per concurrent run ("slot"), nested under its
own cgroup so runs stay inside whatever limits the service itself has.
Before each run it sets the slot's memory and pids limits for that run; the
run's processes are in the group before the tool starts — forked there by
the slot's zygote (warm path) or moved there by the service before the
launcher gets its config (cold path) — and all are dead before the slot is
used again.

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
    """Where this service may create groups: {"memory": dir, "pids": dir} or {"v2": dir}.

    Raises CgroupUnavailable with a reason when neither layout is writable.
    """
    own = _own_paths()
    if (CGROUP_ROOT / "memory" / "tasks").exists() and (CGROUP_ROOT / "pids" / "tasks").exists():
        bases = {
            name: CGROUP_ROOT / name / own.get(name, "/").lstrip("/") / GROUP_PREFIX
            for name in ("memory", "pids")
        }
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


def _pid_alive(pid: int) -> bool:
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
            if child.is_dir() and parts[0] == "runner" and not _pid_alive(int(parts[1])):
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
    "memory": ("memory.failcnt", "memory.max_usage_in_bytes", "memory.oom_control"),
    "pids": ("pids.events",),
    "v2": ("pids.events", "memory.events"),
}
"""Per controller: the files read or written around every run (held open)."""
_WRITTEN_PER_RUN = frozenset({"memory.failcnt", "memory.max_usage_in_bytes"})


class RunCgroup:
    """One slot's cgroup(s) (one per controller): limits per run, moves, kill, removal."""

    def __init__(
        self, bases: dict[str, Path], name: str, dirs: dict[str, Path] | None = None
    ) -> None:
        self.dirs = dirs or {controller: base / name for controller, base in bases.items()}
        self._pids_events_before = 0
        self._memory_events_before = 0
        self._limits: tuple[int, int] | None = None
        self._memory_limit = 0
        self._counters_fresh = False
        self._procs_files = [str(directory / "cgroup.procs") for directory in self.dirs.values()]
        # Read and written around every run: held open (see control_file.KeptOpen).
        self._files = control_file.KeptOpen()
        self._file_paths = {
            (controller, name): str(directory / name)
            for controller, directory in self.dirs.items()
            for name in _PER_RUN_FILES.get(controller, ())
        }

    def _read(self, controller: str, name: str) -> str:
        return self._files.read(self._file_paths[(controller, name)])

    def _write(self, controller: str, name: str, text: str) -> None:
        self._files.write(self._file_paths[(controller, name)], text)

    def create(self) -> None:
        """Make the (empty, unlimited) groups, and open the files used around every run.

        Opened now, so that the service's fd count does not grow with the
        first run of each slot.
        """
        for directory in self.dirs.values():
            directory.mkdir(exist_ok=True)
        for (_, name), path in self._file_paths.items():
            self._files.open(path, writable=name in _WRITTEN_PER_RUN)

    def procs_files(self) -> list[str]:
        """The files to write a pid to, to move it in."""
        return list(self._procs_files)

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
        """Limits for the next run: `memory_bytes` and `processes` on top of what is there.

        What is there is the slot's zygote (and its shared pages), which the
        run's processes fork from. The limits are written only when they
        differ from the previous run's; the counters are normally reset
        already, right after the previous run (:meth:`reset_counters`).
        """
        if not self._counters_fresh:
            self.reset_counters()
        if self._limits != (memory_bytes, processes):
            self._set_limits(memory_bytes, processes)
            self._limits = (memory_bytes, processes)
        self._counters_fresh = False

    def _set_limits(self, memory_bytes: int, processes: int) -> None:
        resident = len(self.pids())
        for controller, directory in self.dirs.items():
            if controller == "memory":
                usage = int(control_file.read(directory / "memory.usage_in_bytes"))
                self._memory_limit = usage + memory_bytes
                limit = str(self._memory_limit)
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
                usage = int(control_file.read(directory / "memory.current"))
                control_file.write(directory / "memory.max", str(usage + memory_bytes))
                control_file.write(directory / "memory.swap.max", "0")
                control_file.write(directory / "pids.max", str(resident + processes + 2))

    def reset_counters(self) -> None:
        """Zero the limit-hit counters (or note their values) before the next run."""
        for controller in self.dirs:
            if controller == "memory":
                self._write("memory", "memory.failcnt", "0")
                self._write("memory", "memory.max_usage_in_bytes", "0")
                self._memory_events_before = _int_after(
                    self._read("memory", "memory.oom_control"), "oom_kill"
                )
            elif controller == "pids":
                self._pids_events_before = _int_after(self._read("pids", "pids.events"), "max")
            elif controller == "v2":
                self._pids_events_before = _int_after(self._read("v2", "pids.events"), "max")
                self._memory_events_before = _int_after(self._read("v2", "memory.events"), "max")
        self._counters_fresh = True

    def add(self, pid: int) -> None:
        """Move `pid` in (blocking: may wait for an RCU grace period)."""
        for path in self.procs_files():
            control_file.write(Path(path), str(pid))

    def memory_limit_hit(self) -> bool:
        """Whether an allocation hit the memory limit during the run."""
        try:
            if "memory" in self.dirs:
                if int(self._read("memory", "memory.failcnt")) > 0:
                    return True  # an allocation was refused at the limit
                oom_kills = _int_after(self._read("memory", "memory.oom_control"), "oom_kill")
                if oom_kills > self._memory_events_before:
                    return True
                limit = self._memory_limit or int(
                    control_file.read(self.dirs["memory"] / "memory.limit_in_bytes")
                )
                return int(self._read("memory", "memory.max_usage_in_bytes")) >= limit
            if "v2" in self.dirs:
                events = _int_after(self._read("v2", "memory.events"), "max")
                return events > self._memory_events_before
        except (OSError, ValueError):
            return False
        return False

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
