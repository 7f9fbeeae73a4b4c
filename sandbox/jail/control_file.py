"""Kernel control files (/proc, cgroupfs): one read or one write, with plain fd calls.

Shared by the jail and the service's cgroup code. A text file object costs
a process forked from a zygote ~50 us (it faults in the io stack), and the
service touches several of these files per run (:class:`KeptOpen` spares
it an open and a close for each).
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
    """Control files held open once and then read or written at offset 0.

    For files used on every run. Only files that show one value or a few
    "key value" lines (a cgroup's ``memory.failcnt``, ``pids.events``, ...):
    the kernel makes their content anew for each read from offset 0. Not
    ``cgroup.procs``, whose listing does not start over that way.
    """

    def __init__(self) -> None:
        self._fds: dict[str, tuple[int, bool]] = {}

    def open(self, path: str, writable: bool = False) -> None:
        """Open `path` now (read-only unless `writable`), if it is not open yet."""
        if path not in self._fds:
            mode = os.O_RDWR if writable else os.O_RDONLY
            self._fds[path] = (os.open(path, mode | os.O_CLOEXEC), writable)

    def read(self, path: str) -> str:
        """The content of the control file at `path` now."""
        self.open(path)
        return os.pread(self._fds[path][0], 1 << 16, 0).decode()

    def write(self, path: str, text: str) -> None:
        """Write `text` to the control file at `path` in one write."""
        fd, writable = self._fds.get(path, (-1, False))
        if not writable:
            if fd >= 0:
                del self._fds[path]
                os.close(fd)
            self.open(path, writable=True)
        os.pwrite(self._fds[path][0], text.encode(), 0)

    def close(self) -> None:
        """Close every file held open."""
        fds, self._fds = self._fds, {}
        for fd, _ in fds.values():
            os.close(fd)
