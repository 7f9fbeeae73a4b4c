"""User namespace: the tool's uid maps to one unprivileged uid outside, nothing else.

Entered after dropping to that uid, so the namespace is owned by an
unprivileged user: the capabilities it grants (needed to build the other
namespaces and mount /proc) are worthless outside it, and no host uid but
the jail's own one (not root) is mapped.
"""

from __future__ import annotations

from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWUSER = 0x10000000


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def enter(uid: int, gid: int) -> None:
    """unshare(CLONE_NEWUSER) and map `uid`/`gid` to themselves (one id each)."""
    syscall(SYS_UNSHARE, CLONE_NEWUSER)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
