"""User namespace: the tool's uid maps to one unprivileged uid outside, nothing else.

Root mode (the service runs as root): entered after dropping to the jail
uid, so the namespace is owned by an unprivileged user; the jail uid maps
to itself. Unprivileged mode (the service runs as any other uid, with no
capability): entered first, by the service's own uid, and the jail uid
inside maps to that uid outside. Either way the capabilities the namespace
grants (needed to build the other namespaces and mount /proc) are worthless
outside it, and no host uid but one (never root) is mapped.
"""

from __future__ import annotations

from sandbox.jail import control_file
from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWUSER = 0x10000000


def enter(uid: int, gid: int, outside_uid: int = -1, outside_gid: int = -1) -> None:
    """unshare(CLONE_NEWUSER) and map `uid`/`gid` inside to one id each outside.

    The ids outside default to the same ones (root mode, after the drop);
    unprivileged mode passes the caller's own euid/egid, the only ids an
    unprivileged process may map. setgroups is denied first: the kernel
    requires it for an unprivileged gid map, and it keeps the tool from
    ever dropping a group to get past a "deny to group" file mode.
    """
    outside_uid = uid if outside_uid < 0 else outside_uid
    outside_gid = gid if outside_gid < 0 else outside_gid
    if outside_uid == 0 or outside_gid == 0:
        raise ValueError("the jail's uid never maps to root outside")
    syscall(SYS_UNSHARE, CLONE_NEWUSER)
    control_file.write("/proc/self/setgroups", "deny")
    control_file.write("/proc/self/uid_map", f"{uid} {outside_uid} 1")
    control_file.write("/proc/self/gid_map", f"{gid} {outside_gid} 1")
