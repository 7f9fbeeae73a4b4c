"""Network namespace: a fresh one has only a loopback device, down: no network at all.

Creating and destroying network namespaces is the costliest namespace work
of a run (~1 ms of CPU each, plus the kernel's asynchronous cleanup), so a
warm zygote enters one empty namespace at its start and its runs (one at a
time per slot) share it. Nothing of a run can stay in it: the namespace
belongs to the service's user namespace, so a tool can neither bring up an
interface nor change a setting in it, and its sockets die with its processes.
The cold path makes a fresh one per run.
"""

from __future__ import annotations

from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWNET = 0x40000000


def unshare() -> None:
    """Leave the host's network stack for an empty one."""
    syscall(SYS_UNSHARE, CLONE_NEWNET)
