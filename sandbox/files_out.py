"""The files a tool left under ``out/``: collected by the service, never through a link.

The tool controls everything in its working dir, so the collector treats it
as hostile (judge0's CVE-2024-28185 and CVE-2024-28189 came from a service
following a tool's symbolic links while handling its files):

- it starts from a descriptor of the run's working dir and opens each
  entry relative to its directory's descriptor, one name at a time, with
  ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
  RESOLVE_NO_XDEV)`` where the kernel has it, ``O_NOFOLLOW`` always, and
  checks that every descriptor is on the working dir's own filesystem: a
  symbolic link is never followed, a mount point never crossed;
- only regular files with one link are read: a symbolic link, a hard link
  (``st_nlink > 1``: it may be another file's name), a FIFO, a socket or a
  device node is listed with ``skipped`` saying so, and never opened;
- a file is read through one descriptor (``O_NOFOLLOW | O_NONBLOCK``:
  what was swapped in for it cannot redirect or block the read), checked
  with ``fstat`` (a regular file, one link, same filesystem), read at most
  to the bytes left in the budget plus one, and ``fstat``-ed again: a file
  that grew, shrank or was written meanwhile is listed as ``changed``;
- the caps (``output_files``, ``output_bytes`` of the tool's policy) hold
  what is returned; a file beyond them is listed with ``truncated`` and no
  content, never dropped. The listing itself stops at
  :data:`LISTED_CEILING` entries; more are counted in ``unlisted``.

Entries are walked in name order, so the same tree always gives the same answer.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field

OUTPUT_DIR = "out"
"""The directory of the working dir whose files are returned."""
LISTED_CEILING = 1024
"""Entries listed in one result (files returned, truncated or skipped)."""
DEPTH_CEILING = 16
"""Directories below ``out/`` walked into; deeper ones are listed as skipped."""
SCAN_CEILING = 65536
"""Directory entries looked at in all: a bound on the work, whatever the tree."""

_SYS_OPENAT2 = 437  # the same number on every architecture (added after the unification)
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class CollectedFile:
    """One entry under ``out/``: returned with its content, or listed with why not."""

    path: str
    """``out/...``, the names joined by ``/``."""
    size: int
    data: bytes | None = None
    sha256: str | None = None
    truncated: bool = False
    """Over the file-count or byte cap: no content."""
    skipped: str | None = None
    """Why this entry is never returned (``symlink``, ``hard_link``, ``fifo``...)."""


@dataclass(frozen=True)
class OutputCollection:
    """What was found under ``out/``."""

    files: tuple[CollectedFile, ...] = ()
    unlisted: int = 0
    """Entries beyond :data:`LISTED_CEILING` (or the scan bound), counted, not listed."""

    @property
    def returned_bytes(self) -> int:
        """Bytes of content returned, all files together."""
        return sum(len(entry.data) for entry in self.files if entry.data is not None)


class _OpenAt2(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Beneath:
    """Opens one name relative to a directory descriptor, never leaving it."""

    available: bool | None = None
    """Whether openat2 works here (None until first tried)."""

    def __init__(self) -> None:
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long

    def open(self, dir_fd: int, name: str, flags: int) -> int:
        if _Beneath.available is not False:
            how = _OpenAt2(flags=flags, mode=0, resolve=_RESOLVE)
            fd = self._syscall(
                ctypes.c_long(_SYS_OPENAT2),
                ctypes.c_int(dir_fd),
                ctypes.c_char_p(os.fsencode(name)),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd >= 0:
                _Beneath.available = True
                return fd
            code = ctypes.get_errno()
            # ENOSYS: an older kernel; EPERM: a seccomp filter that refuses it.
            if code not in (errno.ENOSYS, errno.EPERM) or _Beneath.available:
                raise OSError(code, os.strerror(code), name)
            _Beneath.available = False
        # One name, no slash, O_NOFOLLOW: nothing to follow; the caller
        # checks the filesystem, which RESOLVE_NO_XDEV would have.
        return os.open(name, flags, dir_fd=dir_fd)


_KIND = {
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
}


@dataclass
class _Walk:
    root_device: int
    max_files: int
    max_bytes: int
    opener: _Beneath
    listed: list[CollectedFile] = field(default_factory=list)
    unlisted: int = 0
    scanned: int = 0
    returned_files: int = 0
    returned_bytes: int = 0

    def add(self, entry: CollectedFile) -> None:
        if len(self.listed) < LISTED_CEILING:
            self.listed.append(entry)
        else:
            self.unlisted += 1

    def directory(self, dir_fd: int, prefix: str, depth: int) -> None:
        with os.scandir(dir_fd) as scan:
            entries = []
            for entry in scan:
                self.scanned += 1
                if self.scanned > SCAN_CEILING:
                    self.unlisted += 1
                    continue
                entries.append(entry.name)
        for name in sorted(entries):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(name).decode("utf-8", "backslashreplace")
                self.add(CollectedFile(f"{prefix}/{shown}", 0, skipped="invalid_name"))
                continue
            self.entry(dir_fd, name, f"{prefix}/{name}", depth)

    def entry(self, dir_fd: int, name: str, path: str, depth: int) -> None:
        try:
            status = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # gone since the listing: there is nothing to return
        except OSError:
            self.add(CollectedFile(path, 0, skipped="unreadable"))
            return
        kind = stat.S_IFMT(status.st_mode)
        if kind == stat.S_IFDIR:
            self.subdirectory(dir_fd, name, path, depth)
        elif kind != stat.S_IFREG:
            self.add(CollectedFile(path, status.st_size, skipped=_KIND.get(kind, "unreadable")))
        elif status.st_nlink > 1:
            self.add(CollectedFile(path, status.st_size, skipped="hard_link"))
        elif self.returned_files >= self.max_files or status.st_size > self.bytes_left:
            self.add(CollectedFile(path, status.st_size, truncated=True))
        else:
            self.add(self.read(dir_fd, name, path))

    @property
    def bytes_left(self) -> int:
        return self.max_bytes - self.returned_bytes

    def subdirectory(self, dir_fd: int, name: str, path: str, depth: int) -> None:
        if depth >= DEPTH_CEILING:
            self.add(CollectedFile(path, 0, skipped="directory_limit"))
            return
        try:
            child = self.opener.open(dir_fd, name, _DIRECTORY_FLAGS)
        except OSError as error:
            self.add(CollectedFile(path, 0, skipped=_open_failure(error)))
            return
        try:
            if os.fstat(child).st_dev != self.root_device:
                self.add(CollectedFile(path, 0, skipped="other_filesystem"))
                return
            self.directory(child, path, depth + 1)
        finally:
            os.close(child)

    def read(self, dir_fd: int, name: str, path: str) -> CollectedFile:
        try:
            fd = self.opener.open(dir_fd, name, _FILE_FLAGS)
        except OSError as error:
            return CollectedFile(path, 0, skipped=_open_failure(error))
        try:
            before = os.fstat(fd)
            kind = stat.S_IFMT(before.st_mode)
            if kind != stat.S_IFREG:
                return CollectedFile(path, before.st_size, skipped=_KIND.get(kind, "changed"))
            if before.st_dev != self.root_device:
                return CollectedFile(path, before.st_size, skipped="other_filesystem")
            if before.st_nlink > 1:
                return CollectedFile(path, before.st_size, skipped="hard_link")
            if before.st_size > self.bytes_left:
                return CollectedFile(path, before.st_size, truncated=True)
            data = _read_at_most(fd, before.st_size + 1)
            after = os.fstat(fd)
        except OSError:
            return CollectedFile(path, 0, skipped="unreadable")
        finally:
            os.close(fd)
        if len(data) != before.st_size or _changed(before, after):
            return CollectedFile(path, after.st_size, skipped="changed")
        self.returned_files += 1
        self.returned_bytes += len(data)
        return CollectedFile(path, len(data), data, hashlib.sha256(data).hexdigest())


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns, before.st_nlink) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
        after.st_nlink,
    )


def _open_failure(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink"  # swapped in since it was listed
    if error.errno == errno.EXDEV:
        return "other_filesystem"
    if error.errno == errno.ENOENT:
        return "changed"
    return "unreadable"


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def collect_output_files(workdir: int | str, max_files: int, max_bytes: int) -> OutputCollection:
    """The files under ``out/`` of `workdir` (a directory fd, or a path), within the caps.

    `max_files` and `max_bytes` bound what is returned with content (the
    tool's ``output_files`` and ``output_bytes``). A given fd is not closed
    and its offset is left as it was. Raises ``OSError`` only when
    `workdir` itself cannot be opened as a directory.
    """
    if isinstance(workdir, int):
        root = os.dup(workdir)
    else:
        root = os.open(workdir, _DIRECTORY_FLAGS)
    try:
        walk = _Walk(os.fstat(root).st_dev, max_files, max_bytes, _Beneath())
        try:
            kind = stat.S_IFMT(os.stat(OUTPUT_DIR, dir_fd=root, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return OutputCollection()
        if kind == stat.S_IFDIR:
            walk.subdirectory(root, OUTPUT_DIR, OUTPUT_DIR, 0)
        else:
            skipped = _KIND.get(kind, "not_a_directory")
            walk.add(CollectedFile(OUTPUT_DIR, 0, skipped=skipped))
        return OutputCollection(tuple(walk.listed), walk.unlisted)
    finally:
        os.close(root)
