"""Inside the jail: write the run's input files into its working dir, never through a link.

Runs in the tool's process after every layer is in force, before the tool's
code, as the tool's own uid (so the files are the tool's to read and
write). The service has already checked every name (see
:mod:`sandbox.files_in`); this module trusts none of that and none of what
is already in the working dir:

- every path is walked one component at a time from a descriptor of the
  working dir (``openat``), each directory opened ``O_DIRECTORY |
  O_NOFOLLOW``: a symbolic link anywhere on the way is an error, never
  followed;
- a directory on another filesystem than the working dir (a mount point) is
  an error;
- a directory that was already there must belong to the user the files are
  for: nothing is written into someone else's directory;
- each file is created ``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing entry
  of that name (file, link, FIFO, device) is an error, never opened;
- modes are set on the descriptor (``fchmod``), whatever the umask: 0700
  for directories, 0600 for files.

At most three descriptors are open at any time (the tool's open-files limit
is already in force). Only builtin modules: a launcher started per run pays every import.
"""

from __future__ import annotations

import os

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000


class InputFileError(OSError):
    """A file could not be written where it belongs; nothing of the run may start."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"input file {path!r}: {reason}")
        self.path = path
        self.reason = reason


def _components(path: str) -> list[str]:
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise InputFileError(path, "not a plain relative path")
    return parts


def _why(error: OSError) -> str:
    if isinstance(error, FileExistsError):
        return "something of that name is already there"
    if error.errno == 40:  # ELOOP: O_NOFOLLOW met a symbolic link
        return "a symbolic link is in the way"
    if error.errno == 20:  # ENOTDIR
        return "a component that must be a directory is not one"
    return error.strerror or str(error)


def _enter(parent: int, name: str, device: int, uid: int, owner: tuple[int, int] | None) -> int:
    """A descriptor of directory `name` in `parent`, made when missing."""
    try:
        os.mkdir(name, DIRECTORY_MODE, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False
    try:
        child = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
    except NotADirectoryError:
        # O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR: name the link.
        if os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode & _S_IFMT == _S_IFLNK:
            raise OSError(40, "a symbolic link is in the way") from None
        raise
    try:
        status = os.fstat(child)
        if status.st_dev != device:
            raise OSError(18, "the directory is on another filesystem")  # EXDEV
        if made:
            os.fchmod(child, DIRECTORY_MODE)
            if owner is not None:
                os.fchown(child, *owner)
        elif status.st_uid != uid:
            raise OSError(1, "the directory was already there, owned by someone else")
    except BaseException:
        os.close(child)
        raise
    return child


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_input_files(
    workdir: str | int, files: dict[str, bytes], owner: tuple[int, int] | None = None
) -> None:
    """Create each of `files` (relative path -> content) under `workdir` (a path or a dir fd).

    `owner`: the (uid, gid) the files are for, when the caller is not that
    user (e.g. root writing for the tool); what it creates is then handed
    over with ``fchown``. By default they are the caller's own. Raises
    :class:`InputFileError` (an ``OSError``) naming the file; files written
    before it stay.
    """
    if isinstance(workdir, int):
        root = os.dup(workdir)
    else:
        root = os.open(workdir, _DIRECTORY_FLAGS)
    try:
        device = os.fstat(root).st_dev
        uid = owner[0] if owner is not None else os.geteuid()
        for path, data in files.items():
            parts = _components(path)
            parent = root
            try:
                for name in parts[:-1]:
                    child = _enter(parent, name, device, uid, owner)
                    if parent != root:
                        os.close(parent)
                    parent = child
                fd = os.open(parts[-1], _FILE_FLAGS, FILE_MODE, dir_fd=parent)
                try:
                    status = os.fstat(fd)
                    if status.st_mode & _S_IFMT != _S_IFREG or status.st_dev != device:
                        raise OSError(22, "not a new regular file of the working dir")
                    os.fchmod(fd, FILE_MODE)
                    if owner is not None:
                        os.fchown(fd, *owner)
                    _write(fd, data)
                finally:
                    os.close(fd)
            except InputFileError:
                raise
            except OSError as error:
                raise InputFileError(path, _why(error)) from None
            finally:
                if parent != root:
                    os.close(parent)
    finally:
        os.close(root)
