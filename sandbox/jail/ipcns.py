"""IPC namespace: SysV IPC objects and POSIX message queues of the host are out of reach."""

from __future__ import annotations

from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWIPC = 0x08000000


def unshare() -> None:
    """Enter a new IPC namespace."""
    syscall(SYS_UNSHARE, CLONE_NEWIPC)
