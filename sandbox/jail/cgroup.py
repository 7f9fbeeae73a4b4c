"""cgroup, jail side: the first step of the jail checks it is in the run's groups.

The groups (memory and pids limits) are made, limited and emptied by the
service: see :mod:`sandbox.jail.cgroup_service`. The jail process is normally
in them already (forked there by the slot's zygote, or moved there by the
service before it got its config); it joins them itself otherwise.
"""

from __future__ import annotations

import os

from sandbox.jail import control_file


def join(procs_files: list[str]) -> None:
    """Make sure the calling process is in every listed group before anything else runs."""
    pid = str(os.getpid())
    for path in procs_files:
        if pid not in control_file.read(path).split():
            control_file.write(path, pid)
