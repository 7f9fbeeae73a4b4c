"""cgroup, jail side: a slot's zygote joins the slot's groups through files the service opened.

The groups (memory, pids and CPU accounting) are made, limited and
emptied by the service: see :mod:`sandbox.host.cgroup_service`. A zygote
is handed its slot's ``cgroup.procs`` files as open fds and joins by
writing "0" (the writer itself) to each: neither their paths nor a pid
ever enter its memory, which every warm run inherits. Its children are
born in the groups; a launcher the service starts itself is moved in by
the service before it reads its config.
"""

from __future__ import annotations

import os


def join_through(procs_fds: list[int]) -> None:
    """Move the calling process into each group whose ``cgroup.procs`` is open on `procs_fds`."""
    for fd in procs_fds:
        os.write(fd, b"0")
        os.close(fd)
