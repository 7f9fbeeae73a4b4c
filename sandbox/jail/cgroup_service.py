"""Run cgroups, service side: discover a writable hierarchy, create, kill, remove.

cgroup v1 (memory and pids hierarchies, as on these machines) or v2. The
service (root) creates a run's group before the run and removes it after
killing whatever is left in it; the jail's first step moves the launcher
into it (:func:`sandbox.jail.cgroup.join`), so every process of the run is
inside before the tool starts. Groups nest under the service's own cgroup,
which keeps runs inside whatever limits the service itself has.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

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
    """Where this service may create run groups: {"memory": dir, "pids": dir} or {"v2": dir}.

    Raises CgroupUnavailable with a reason when neither layout is writable.
    """
    own = _own_paths()
    if (CGROUP_ROOT / "memory" / "tasks").exists() and (CGROUP_ROOT / "pids" / "tasks").exists():
        bases = {
            controller: CGROUP_ROOT
            / controller
            / own.get(controller, "/").lstrip("/")
            / GROUP_PREFIX
            for controller in ("memory", "pids")
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


class RunCgroup:
    """The cgroup(s) of one run: created with limits, joined by the jail, killed, removed."""

    def __init__(self, bases: dict[str, Path], name: str) -> None:
        self.dirs = {controller: base / name for controller, base in bases.items()}

    def create(self, memory_bytes: int, processes: int) -> None:
        """Make the groups and set the memory (no swap) and process-count limits."""
        for controller, directory in self.dirs.items():
            directory.mkdir()
            if controller == "memory":
                (directory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                swap = directory / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(memory_bytes))
            elif controller == "pids":
                (directory / "pids.max").write_text(str(processes))
            else:
                (directory / "memory.max").write_text(str(memory_bytes))
                (directory / "memory.swap.max").write_text("0")
                (directory / "pids.max").write_text(str(processes))

    def procs_files(self) -> list[str]:
        """The files the jail writes its pid to, to join."""
        return [str(directory / "cgroup.procs") for directory in self.dirs.values()]

    def _pids(self) -> list[int]:
        pids: list[int] = []
        for directory in self.dirs.values():
            try:
                pids += [int(p) for p in (directory / "cgroup.procs").read_text().split()]
            except OSError:
                pass
        return pids

    def memory_limit_hit(self) -> bool:
        """Whether an allocation hit the memory limit during the run."""
        for controller, directory in self.dirs.items():
            try:
                if controller == "memory":
                    return int((directory / "memory.failcnt").read_text()) > 0
                if controller == "v2":
                    events = (directory / "memory.events").read_text().split()
                    return int(events[events.index("max") + 1]) > 0
            except (OSError, ValueError):
                return False
        return False

    def pids_limit_hit(self) -> bool:
        """Whether a fork or clone was refused by the pids limit."""
        directory = self.dirs.get("pids") or self.dirs.get("v2")
        if directory is None:
            return False
        try:
            events = (directory / "pids.events").read_text().split()
            return int(events[events.index("max") + 1]) > 0
        except (OSError, ValueError):
            return False

    def kill_all(self, timeout: float = 2.0) -> None:
        """SIGKILL every process still in the group until it is empty."""
        kill_file = self.dirs.get("v2")
        if kill_file is not None and (kill_file / "cgroup.kill").exists():
            try:
                (kill_file / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            pids = self._pids()
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    def remove(self) -> None:
        """Kill what is left, then remove the (now empty) groups."""
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
