"""Kernel control files (/proc, cgroupfs): one read or one write, with plain fd calls.

Shared by the jail and the service's cgroup code. A text file object costs
a process forked from a zygote ~50 us (it faults in the io stack), and the
service touches several of these files per run.
"""

from __future__ import annotations

import os


def read(path: str | os.PathLike[str]) -> str:
    """The whole (small) content of the control file at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def write(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to the control file at `path` in one write (as the kernel wants it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
