"""Mount namespace: the tool sees a minimal, read-only root built for its run.

Built in two steps, like nsjail:

1. As real root, in a fresh mount namespace (:func:`build_root`): a tmpfs
   root holding read-only views of the paths the tool may read (the
   interpreter prefix, /usr, the shared libraries, policy-listed paths), a
   few device nodes, a private /tmp and a fresh working dir at /workdir
   (both size-limited tmpfs: their pages count against the run's memory
   cgroup, so filling them fills no disk), and a /proc; then ``pivot_root``
   into it and detach the host's tree.

   No file the tool can open is a host inode it could mark, lock or watch
   for another run to see: a directory is seen through an overlay of its
   own (each overlay has its own inodes, so a lock on one of its files is
   invisible to the host and to any other slot), a single file is a copy,
   and the device nodes are made here (as real root) on a /dev of their
   own. Everything is read-only: no timestamp or mode can change either.
   In unprivileged mode no device node can be made: those are read-only
   binds of the host's (the one exception: see ``isolation.mountns`` at
   /health, where the probe reports which jail files are host inodes).
   Nothing else of the host — the service's keys, policy, database,
   source, /root, /etc/shadow — exists in the jail at all. Doing this as
   real root avoids needing search permission on paths like /root (mode
   0700) for the unprivileged jail uid.
2. In the user namespace, pid 1 of the new pid namespace mounts a /proc of
   that pid namespace over the old one (:func:`mount_proc`), so /proc lists
   only the jail's processes. (A proc mount from a user namespace is only
   allowed when a fully visible proc exists in the mount namespace, hence
   the /proc of step 1.)

In unprivileged mode (the service is not root; see :func:`sandbox.jail.contain`)
step 1 runs in a mount namespace owned by the run's user namespace, with
that namespace's capabilities (:func:`build_root`): the same
tree, except that its /proc is a bind of the service's own, and that the
host paths are reached as the service's uid. A container engine that masks
parts of /proc (podman and Docker by default) makes that /proc not fully
visible, and the jail's init cannot mount its own: the run fails closed in
the mountns layer (see docs/containers.md).
"""

from __future__ import annotations

import os
import stat

from sandbox.jail.config import WORKDIR_IN_JAIL
from sandbox.jail.libc import SYS_MOUNT, SYS_PIVOT_ROOT, SYS_UMOUNT2, SYS_UNSHARE, syscall

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

DEVICES: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
"""Device nodes in the jail's /dev (read-write, no others exist)."""

_OLD_ROOT = ".old-root"
_STAGE = ".stage"
"""Where a view is prepared (a tmpfs of its own, gone before the tool runs)."""
COPIED_FILE_BYTES = 16 << 20
"""Largest single read-only file given as a copy; a larger one is bound (the host's inode)."""
TMPFS_INODES = 16384
"""Files (and dirs) a run may create in /tmp and in /workdir each: bounds inode memory."""


def unshare() -> None:
    """Enter a new mount namespace (a copy of the current mounts)."""
    syscall(SYS_UNSHARE, CLONE_NEWNS)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    syscall(
        SYS_MOUNT,
        source.encode() + b"\0" if source else None,
        target.encode() + b"\0",
        fstype.encode() + b"\0" if fstype else None,
        flags,
        data.encode() + b"\0" if data else None,
    )


_SOURCE_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
"""statvfs's ST_RDONLY, ST_NOSUID, ST_NODEV and ST_NOEXEC have these same values."""


def _bind(source: str, target: str, flags: int) -> None:
    """Bind `source` at `target`, then remount it with `flags` (read-only, nosuid...).

    The source mount's own restrictions are kept too: never less
    restrictive than the host's mount, and, in a user namespace, the kernel
    refuses (EPERM) a remount that would clear a flag of a mount inherited
    from the parent namespace (locked: nosuid, nodev, noexec, read-only).
    """
    _mount(source, target, None, MS_BIND | MS_REC)
    kept = os.statvfs(target).f_flag & _SOURCE_FLAGS  # the bind's flags: the source's
    _mount(None, target, None, MS_BIND | MS_REMOUNT | flags | kept)


def _make_mountpoint(root: str, path: str, is_dir: bool) -> str:
    target = root + path
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    return target


JAIL_OWN_PATHS: tuple[str, ...] = ("/proc", "/dev", "/tmp", WORKDIR_IN_JAIL)
"""Paths the jail mounts itself: a policy's read path there only grants Landlock access."""


def _is_jail_own(path: str) -> bool:
    return any(path == own or path.startswith(own + "/") for own in JAIL_OWN_PATHS)


def beneath(path: str, tops: list[str]) -> bool:
    """Whether `path` is one of `tops` or inside one of them."""
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


def outermost(paths: list[str]) -> list[str]:
    """`paths` without duplicates and without those beneath another one (bound with it)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not beneath(path, kept):
            kept.append(path)
    return kept


def _add_read_only(root: str, path: str, stage: str, per_run: bool = False) -> None:
    """`path` in the jail's root, read-only, as its own inodes (see the module docstring).

    A directory: through an overlay (or, where its file system cannot be an
    overlay's lower layer, a read-only bind), then the same for whatever
    is mounted beneath it on the host. A file: a copy (`per_run`: in the
    stage, bound into place, when the root is shared with later runs).
    """
    if _is_jail_own(path):
        return
    if os.path.islink(path):
        # Keep symlinks as symlinks (/bin -> usr/bin): the target is bound on its own.
        link = root + path
        os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.readlink(path), link)
        return
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        _copy_read_only(root, path, stage, per_run)
        return
    _view_directory(path, _make_mountpoint(root, path, is_dir=True), stage)
    for mount_point in _mounts_beneath(path):
        if _is_jail_own(mount_point) or not os.path.exists(root + mount_point):
            continue
        if os.path.isdir(mount_point):
            _view_directory(mount_point, root + mount_point, stage)
        elif not os.path.islink(mount_point):
            # A file on a mount point of its own: in the jail, a read-only
            # bind of the copy over the overlay's file.
            _copy_read_only(root, mount_point, stage, per_run=True)


def _view_directory(source: str, target: str, stage: str) -> None:
    """A read-only overlay of `source` at `target`; a read-only bind where none can be made.

    Its lower layer is a read-only bind of `source` (so reads through it
    write no access time on the host's inodes), made in the stage and
    detached once the overlay holds its own copy of it.
    """
    lower = f"{stage}/lower"
    kept = os.statvfs(source).f_flag & _SOURCE_FLAGS
    _bind(source, lower, MS_RDONLY | MS_NOSUID | MS_NODEV)
    try:
        _mount(
            "overlay",
            target,
            "overlay",
            MS_RDONLY | MS_NOSUID | MS_NODEV | kept,
            f"lowerdir={_escape(lower)}:{_escape(stage)}/empty",
        )
    except OSError:
        _bind(source, target, MS_RDONLY | MS_NOSUID | MS_NODEV)  # e.g. a lower fs overlay refuses
    finally:
        syscall(SYS_UMOUNT2, lower.encode() + b"\0", MNT_DETACH)


def _escape(path: str) -> str:
    """`path` as a layer in an overlay's ``lowerdir`` option."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _copy_read_only(root: str, path: str, stage: str, per_run: bool) -> None:
    """A copy of the file at `path`, read-only at the same place in the jail's root.

    Larger than :data:`COPIED_FILE_BYTES`: a read-only bind of the host's file.
    """
    target = _make_mountpoint(root, path, is_dir=False)
    if os.path.getsize(path) > COPIED_FILE_BYTES:
        _bind(path, target, MS_RDONLY | MS_NOSUID | MS_NODEV)
        return
    copy = f"{stage}/copy-{len(os.listdir(stage))}" if per_run else target
    mode = os.stat(path).st_mode & 0o777
    source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        destination = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            while os.sendfile(destination, source, None, 1 << 20):
                pass
        finally:
            os.close(destination)
    finally:
        os.close(source)
    os.chmod(copy, mode)
    times = os.stat(path)
    os.utime(copy, ns=(times.st_atime_ns, times.st_mtime_ns))  # as the host's, in every copy
    if per_run:
        _bind(copy, target, MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mounts_beneath(path: str) -> list[str]:
    """Host mount points strictly beneath the directory `path`, outermost first.

    The mount table names every mount by its absolute path, the slots' run
    roots (under the service's state dir) included; a warm tool inherits
    this process's memory, freed parts too. So the table is read into one
    buffer, searched in place (only the lines wanted become strings: they
    are beneath a path the tool may read anyway) and zeroed after.
    """
    prefix = _escape_mountinfo(path.rstrip("/") + "/").encode("utf-8", "surrogateescape")
    table, length = _read_whole("/proc/self/mountinfo")
    points = []
    try:
        start = 0
        while start < length:
            end = table.find(b"\n", start, length)
            end = length if end < 0 else end
            field = start
            for _ in range(4):  # the mount point is the fifth field
                field = table.find(b" ", field, end) + 1
            if field and table.startswith(prefix, field, end):
                point = bytes(table[field : table.find(b" ", field, end)])
                points.append(_unescape_mountinfo(point.decode("utf-8", "surrogateescape")))
            start = end + 1
    finally:
        table[:] = bytes(len(table))
    return sorted(set(points), key=lambda point: point.count("/"))


def _read_whole(path: str) -> tuple[bytearray, int]:
    """The whole of a /proc file in one buffer (never copied through a smaller one); its length."""
    buffer = bytearray(1 << 16)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        length = 0
        while True:
            if length == len(buffer):
                larger = bytearray(2 * len(buffer))
                larger[:length] = buffer
                buffer[:] = bytes(len(buffer))
                buffer = larger
            read = os.readv(fd, [memoryview(buffer)[length:]])
            if not read:
                return buffer, length
            length += read
    finally:
        os.close(fd)


def _unescape_mountinfo(field: str) -> str:
    """A mountinfo path field with its octal escapes (space, tab, newline, backslash) undone."""
    if "\\" not in field:
        return field
    raw = bytes(field, "utf-8", "surrogateescape").decode("unicode_escape")
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def _escape_mountinfo(path: str) -> str:
    """`path` as the mount table writes it (space, tab, newline and backslash in octal)."""
    for character in "\\ \t\n":
        path = path.replace(character, f"\\{ord(character):03o}")
    return path


def _stage(root: str) -> str:
    """Mount a fresh stage (a small tmpfs with an empty dir for overlays) in `root`; its path."""
    stage = f"{root}/{_STAGE}"
    _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0700")
    os.mkdir(f"{stage}/lower")
    os.mkdir(f"{stage}/empty")
    return stage


def _unstage(stage: str) -> None:
    """Detach the stage (what was bound from it stays; the rest is freed)."""
    syscall(SYS_UMOUNT2, stage.encode() + b"\0", MNT_DETACH)


def _make_devices(root: str, own_nodes: bool) -> None:
    """The jail's /dev: its own nodes of :data:`DEVICES` (real root), or read-only binds.

    Own nodes live on a tmpfs of their own (the root's is nodev); either way
    /dev ends read-only: writing a device is allowed, changing a node's
    times or mode (a mark the next run could read) is not.
    """
    dev = _make_mountpoint(root, "/dev", is_dir=True)
    if own_nodes:
        _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=4k,nr_inodes=16,mode=0755")
        for device in DEVICES:
            node = root + device
            host = os.stat(device)
            os.mknod(node, 0o666 | stat.S_IFCHR, host.st_rdev)
            os.chmod(node, 0o666)  # not the umask's
            # The host's times, the same in every slot (a node's own would tell slots apart).
            os.utime(node, ns=(host.st_atime_ns, host.st_mtime_ns))
        _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
        return
    for device in DEVICES:
        _bind(
            device, _make_mountpoint(root, device, is_dir=False), MS_RDONLY | MS_NOSUID | MS_NOEXEC
        )


def build_template(
    root: str, read_paths: list[str], hidden_paths: list[str], as_real_root: bool = True
) -> None:
    """In a private mount namespace: the part of the jail's root all runs share.

    A tmpfs at `root` with the read-only paths, the hidden paths covered,
    the device nodes, a /proc, and empty mountpoints for what each run
    mounts itself. A warm zygote builds it once (as real root); a run
    without a zygote builds it for itself. With `as_real_root` the device
    nodes are the jail's own and /proc is a fresh one; in a user namespace,
    where a proc can only be mounted by a process of the pid namespace it
    shows, /proc is a recursive bind of the current one: either is the
    fully visible proc the kernel wants before the jail's init may mount
    its own over it.
    """
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,nr_inodes=4096,mode=0755")
    for mountpoint in ("/tmp", WORKDIR_IN_JAIL, f"/{_OLD_ROOT}", f"/{_STAGE}"):
        _make_mountpoint(root, mountpoint, is_dir=True)
    stage = _stage(root)
    try:
        for path in outermost(read_paths):
            _add_read_only(root, path, stage)
    finally:
        _unstage(stage)
    for path in hidden_paths:
        if os.path.isdir(root + path):
            _mount(
                "tmpfs", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555"
            )
    _make_devices(root, own_nodes=as_real_root)
    fresh_proc = as_real_root
    proc = _make_mountpoint(root, "/proc", is_dir=True)
    if fresh_proc:
        _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        _bind("/proc", proc, MS_NOSUID | MS_NODEV | MS_NOEXEC)


def enter_root(
    root: str,
    extra_read_paths: list[str],
    tmp_bytes: int,
    owner: tuple[int, int],
    exec_written: bool = False,
) -> None:
    """As real root, in the run's own mount namespace: finish the root at `root`, pivot into it.

    Adds the run's extra read-only paths, a fresh /tmp and an empty /workdir
    (tmpfs, owned by the jail user; the run's files come with its payload),
    pivots, detaches the host's tree, makes / read-only, and leaves the
    caller in /workdir. /tmp and /workdir are the only places the tool can
    write: they are noexec (nothing written there can be executed, mapped
    executable or loaded as a library) unless `exec_written`.
    """
    written = MS_NOSUID | MS_NODEV | (0 if exec_written else MS_NOEXEC)
    if extra_read_paths:
        stage = _stage(root)
        try:
            # None beneath the template's (the service checks). The root's tmpfs
            # may be shared with a zygote: what is the run's own goes through the stage.
            for path in outermost(extra_read_paths):
                _add_read_only(root, path, stage, per_run=True)
        finally:
            _unstage(stage)
    _mount(
        "tmpfs",
        root + "/tmp",
        "tmpfs",
        written,
        f"size={tmp_bytes},nr_inodes={TMPFS_INODES},mode=1777",
    )
    workdir = root + WORKDIR_IN_JAIL
    uid, gid = owner
    _mount(
        "tmpfs",
        workdir,
        "tmpfs",
        written,
        f"size={tmp_bytes},nr_inodes={TMPFS_INODES},mode=0700,uid={uid},gid={gid}",
    )
    syscall(SYS_PIVOT_ROOT, root.encode() + b"\0", f"{root}/{_OLD_ROOT}".encode() + b"\0")
    os.chdir("/")
    syscall(SYS_UMOUNT2, f"/{_OLD_ROOT}".encode() + b"\0", MNT_DETACH)
    # Per-mount flags only: the template's tmpfs is shared with the zygote.
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(WORKDIR_IN_JAIL)


def make_private() -> None:
    """New mount namespace whose mounts no longer propagate to or from the host."""
    unshare()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def build_root(
    root: str,
    read_paths: list[str],
    extra_read_paths: list[str],
    hidden_paths: list[str],
    tmp_bytes: int,
    owner: tuple[int, int],
    exec_written: bool,
    template_ready: bool,
    as_real_root: bool,
    own_proc: bool = False,
) -> None:
    """The run's mount namespace with its minimal root, entered.

    With `template_ready` (the caller's zygote built it, as real root), only
    the run's own part is mounted, in a copy of the zygote's namespace.
    Otherwise the whole tree is built here: `as_real_root` outside any
    namespace (root mode), or in unprivileged mode with the capabilities of
    the run's user namespace, in a mount namespace it owns (no zygote can
    share a template there: its mounts would be locked in the run's
    namespace). Then host paths are reached as the service's own uid: they
    must be readable by it (the state dir, the interpreter, the policy's
    paths), and /proc is a bind of the service's own (see
    :func:`build_template`). With `own_proc` (real root only, as pid 1 of
    the run's pid namespace), the /proc of that namespace is mounted over
    the template's at once, and :func:`mount_proc` is not needed.
    `exec_written`: see :func:`enter_root`.
    """
    if template_ready:
        unshare()
    else:
        make_private()
        shared = [path for path in read_paths if path not in extra_read_paths]
        build_template(root, shared, hidden_paths, as_real_root=as_real_root)
    if own_proc:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    enter_root(root, extra_read_paths, tmp_bytes, owner, exec_written)


def mount_proc() -> None:
    """In the new pid namespace (as its pid 1): a /proc that shows only this namespace."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=0")
    except PermissionError as error:
        # The kernel's answer when no fully visible /proc exists: the usual
        # cause is a container engine's masks over parts of the service's /proc.
        raise PermissionError(
            f"{error}: cannot mount the jail's /proc (is the service's /proc partly"
            " masked? containers: security_opt systempaths=unconfined)"
        ) from None
