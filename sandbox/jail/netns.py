"""Network namespace: a fresh one has only a loopback device, down: no network at all."""

from __future__ import annotations

from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWNET = 0x40000000


def unshare() -> None:
    """Leave the host's network stack for an empty one."""
    syscall(SYS_UNSHARE, CLONE_NEWNET)
