"""UTS namespace: the tool sees its own hostname, not the host's."""

from __future__ import annotations

from sandbox.jail.libc import SYS_SETHOSTNAME, SYS_UNSHARE, syscall

CLONE_NEWUTS = 0x04000000


def unshare() -> None:
    """Enter a new UTS namespace."""
    syscall(SYS_UNSHARE, CLONE_NEWUTS)


def set_hostname(name: str) -> None:
    """Name the jail's host (needs CAP_SYS_ADMIN in the namespace's owner)."""
    data = name.encode()
    syscall(SYS_SETHOSTNAME, data, len(data))
