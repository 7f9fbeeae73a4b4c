"""PID namespace: the tool is pid 2 of its own tree, under a minimal init (pid 1).

``unshare(CLONE_NEWPID)`` only affects the caller's future children: the
next child is pid 1 ("init") of the new namespace. A zygote running as root
makes one before each fork (:func:`fresh_for_children`), so the jail's first
process is its init; otherwise the jail makes it and forks init itself. Init
(:mod:`sandbox.jail.init`) forks the tool and exits when the tool exits —
which makes the kernel kill every other process of the namespace: nothing
survives a run through setsid, double fork or a stopped process.
"""

from __future__ import annotations

import os

from sandbox.jail.libc import SYS_SETNS, SYS_UNSHARE, syscall

CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1


def unshare() -> None:
    """Put the caller's future children in a new pid namespace."""
    syscall(SYS_UNSHARE, CLONE_NEWPID)


def own_namespace() -> int:
    """An fd of the caller's own pid namespace, for :func:`fresh_for_children`."""
    return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def fresh_for_children(own: int) -> None:
    """Make the caller's next child pid 1 of a new pid namespace (needs real root).

    The kernel allows one :func:`unshare` per "pid namespace for children":
    setns to the caller's own (`own`, from :func:`own_namespace`) resets it
    first. Only the next child lands in the new namespace as its pid 1 (a
    second child would be its pid 2): call this before every fork.
    """
    syscall(SYS_SETNS, own, CLONE_NEWPID)
    syscall(SYS_UNSHARE, CLONE_NEWPID)
