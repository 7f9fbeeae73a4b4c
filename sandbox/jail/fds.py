"""File descriptors: the tool inherits stdin, stdout and stderr, nothing else."""

from __future__ import annotations

from sandbox.jail.libc import SYS_CLOSE_RANGE, syscall

_ALL = 0xFFFFFFFF


def close_inherited(keep: tuple[int, ...] = ()) -> None:
    """Close every fd above 2 (results channel, listener copies, anything leaked).

    `keep`: fds left open for the tool's own set-up, which closes them
    before running anything (see :func:`sandbox.jail.receive`).
    """
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        if fd > low:
            syscall(SYS_CLOSE_RANGE, low, fd - 1, 0)
        low = fd + 1
    syscall(SYS_CLOSE_RANGE, low, _ALL, 0)
