"""Kernel control files (/proc, cgroupfs): one read or one write, with plain fd calls.

Shared by the jail and the service's cgroup code. A text file object costs
a process forked from a zygote ~50 us (it faults in the io stack), and the
service reads several of these files per run (:class:`KeptOpen` spares it
an open and a close for each).
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


class KeptOpen:
    """Control files held open once and then read at offset 0.

    For files read around every run. Only files that show one value or a
    few "key value" lines (a cgroup's ``memory.oom_control``,
    ``pids.events``, ``memory.stat``, ...): the kernel makes their content
    anew for each read from offset 0. Not ``cgroup.procs``, whose listing
    does not start over that way.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def open(self, path: str) -> None:
        """Open `path` now, if it is not open yet."""
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, path: str) -> str:
        """The content of the control file at `path` now."""
        self.open(path)
        return os.pread(self._fds[path], 1 << 16, 0).decode()

    def close(self) -> None:
        """Close every file held open."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
