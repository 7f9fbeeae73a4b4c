"""File descriptors: the tool inherits stdin, stdout and stderr, nothing else."""

from __future__ import annotations

from sandbox.jail.libc import SYS_CLOSE_RANGE, syscall

_ALL = 0xFFFFFFFF


def close_inherited(keep: int = -1) -> None:
    """Close every fd above 2 (results channel, listener copies, anything leaked).

    `keep`: one fd to leave open, the pipe the tool's request arrives on;
    the tool reads it to its end and closes it before running anything.
    """
    if keep > 2:
        if keep > 3:
            syscall(SYS_CLOSE_RANGE, 3, keep - 1, 0)
        syscall(SYS_CLOSE_RANGE, keep + 1, _ALL, 0)
    else:
        syscall(SYS_CLOSE_RANGE, 3, _ALL, 0)
