"""File descriptors: the tool inherits stdin, stdout and stderr, nothing else."""

from __future__ import annotations

from sandbox.jail.libc import SYS_CLOSE_RANGE, syscall

_ALL = 0xFFFFFFFF


def close_inherited() -> None:
    """Close every fd above 2 (results channel, listener copies, anything leaked)."""
    syscall(SYS_CLOSE_RANGE, 3, _ALL, 0)
