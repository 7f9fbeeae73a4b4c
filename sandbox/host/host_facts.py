"""What the runner finds of the host at start (or makes on it), and gives back at close."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.host.bytecode import PACKAGE_ROOT, compile_jail_bytecode
from sandbox.host.cgroup_service import CgroupUnavailable, RunCgroup, discover_bases, owner_groups
from sandbox.host.interpreter import Interpreter, inspect_interpreter
from sandbox.host.layer_status import LayerTable, inactive
from sandbox.jail.landlock import abi_version


@dataclass(frozen=True)
class HostFacts:
    """The interpreter's paths, the cgroups runs may use, the Landlock ABI, and what the
    runner holds open on the host until it closes."""

    interpreter: Interpreter
    cgroup_bases: dict[str, Path]
    """Per controller, this service's own group (none: no cgroup layer here)."""
    landlock_abi: int
    package_fd: int
    """The sandbox package's directory, open: launchers and zygotes run from it."""
    package_env_cache: str
    """Where package environments' preloaded modules keep caches (see :class:`Zygote`)."""


async def find_host(python: str, layers: LayerTable) -> HostFacts:
    """Inspect `python`, compile the jail's bytecode, make this service's cgroups.

    Without cgroups here the cgroup layer is marked inactive in `layers`.
    """
    # Absolute, and naming nothing of the service's state: the modules a zygote
    # preloads keep the path in memory every warm run of it inherits (a
    # relative one they make absolute, with the zygote's working dir).
    cache = tempfile.mkdtemp(prefix="pagi-package-envs-")
    package_fd = os.open(PACKAGE_ROOT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    interpreter = await asyncio.to_thread(inspect_interpreter, python)
    await asyncio.to_thread(compile_jail_bytecode)
    try:
        bases = await asyncio.to_thread(discover_bases)
        cgroup_bases = await asyncio.to_thread(owner_groups, bases)
    except (CgroupUnavailable, OSError) as error:
        cgroup_bases = {}
        layers["cgroup"] = inactive(str(error))
    return HostFacts(interpreter, cgroup_bases, abi_version(), package_fd, cache)


def slot_cgroup(host: HostFacts, index: int, layers: LayerTable) -> RunCgroup | None:
    """A new cgroup for slot `index` (None without cgroups, or when it cannot be made)."""
    if not host.cgroup_bases:
        return None
    cgroup = RunCgroup(host.cgroup_bases, f"slot-{index}-{secrets.token_hex(4)}")
    try:
        cgroup.create()
    except OSError as error:
        layers["cgroup"] = inactive(f"cannot create: {error}")
        return None
    return cgroup


async def release_host(host: HostFacts) -> None:
    """Remove this service's cgroups (its slots' are gone), close what :func:`find_host` opened."""
    if host.cgroup_bases:
        await asyncio.to_thread(RunCgroup({}, "", dirs=dict(host.cgroup_bases)).remove)
    os.close(host.package_fd)
    await asyncio.to_thread(shutil.rmtree, host.package_env_cache, True)
