"""Host inodes a run can reach but not have for its own: pinned by the service with shared locks.

A lock lives on an inode. Most of what a jail holds is its own (overlays,
copies, its own device nodes and tmpfs, see :mod:`sandbox.jail.mountns`),
but a few inodes are the same for every process on the host: the one
inode behind every eventfd, epoll, timerfd and signalfd ("anon_inode"),
the host's cgroup and time namespace files, and, where no device node
can be made (unprivileged mode), the device nodes. A run that takes an
exclusive lock on one would be seen by any other run trying to.

The service holds a shared ``flock`` and a shared open-file-description
lock on each, for as long as it runs. Then no one can hold an exclusive
lock there, and everything a run can ask is answered the same whatever
other runs do: a shared lock is always granted, an exclusive one never
(a blocking request waits for the run's wall clock), and a query names
the service's lock, which was taken first. Held from the service, not
the jail: the jail's processes are the ones being kept apart.
"""

from __future__ import annotations

import fcntl
import os
import struct

_FLOCK = struct.Struct("hhxxxxqqixxxx")
"""struct flock (x86_64): l_type, l_whence, l_start, l_len, l_pid."""


def _shared_lock(fd: int) -> None:
    """A shared flock and a shared OFD lock over the whole of `fd`'s file (non-blocking)."""
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))


class LockPins:
    """The pinned inodes (their fds, held open) and those that could not be pinned, and why."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self.failed: dict[str, str] = {}

    @property
    def pinned(self) -> list[str]:
        """What is pinned now."""
        return sorted(self._fds)

    def pin_shared(self) -> None:
        """Pin what every run can reach on any host: the anonymous inode, two namespace files."""
        if "anon_inode" not in self._fds:
            self._hold("anon_inode", lambda: os.eventfd(0, os.EFD_CLOEXEC))
        for name in ("cgroup", "time"):
            path = f"/proc/self/ns/{name}"
            if path not in self._fds and os.path.exists(path):
                self._hold(path, lambda path=path: os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def pin_paths(self, paths: list[str]) -> None:
        """Pin these host files (a jail shows them as they are: see the probe's host_inodes)."""
        for path in paths:
            if path not in self._fds:
                self._hold(path, lambda path=path: os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def _hold(self, name: str, opener: object) -> None:
        try:
            fd = opener()  # type: ignore[operator]
        except OSError as error:
            self.failed[name] = f"cannot open: {error.strerror}"
            return
        try:
            _shared_lock(fd)
        except OSError as error:
            os.close(fd)
            self.failed[name] = f"cannot lock (someone holds it exclusively?): {error.strerror}"
            return
        self.failed.pop(name, None)
        self._fds[name] = fd

    def release(self) -> None:
        """Close every pinned fd (the locks go with them)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
