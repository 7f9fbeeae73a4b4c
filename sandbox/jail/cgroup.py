"""cgroup, jail side: the first step of the jail joins the run's groups.

The groups themselves (memory and pids limits, one per run) are made and
removed by the service: see :mod:`sandbox.jail.cgroup_service`.
"""

from __future__ import annotations

import os


def join(procs_files: list[str]) -> None:
    """In the jail's first step (still root): move the calling process into the run's groups."""
    pid = str(os.getpid())
    for path in procs_files:
        with open(path, "w") as handle:
            handle.write(pid)
