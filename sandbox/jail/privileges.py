"""Privileges: never root, no capabilities, no way to gain any (no_new_privs)."""

from __future__ import annotations

import os

from sandbox.jail.libc import SYS_CAPSET, prctl, syscall, u32

PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_MAX_CAPABILITY = 63


def drop_to_unprivileged(uid: int, gid: int) -> None:
    """As real root: become `uid`/`gid` for good, with no supplementary groups.

    Keeps the process dumpable so it can still write its own
    ``/proc/self/uid_map`` when it enters its user namespace (changing uid
    resets dumpability, which makes /proc/self root-owned).
    """
    if uid == 0 or gid == 0:
        raise ValueError("the jail never runs a tool as root")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError("uid/gid did not change")
    prctl(PR_SET_DUMPABLE, 1)


def set_non_dumpable() -> None:
    """Make /proc/self and ptrace unavailable to same-uid processes (the jail's init)."""
    prctl(PR_SET_DUMPABLE, 0)


def set_dumpable() -> None:
    """The state a plain execve gives: same-uid peers without more privileges may trace."""
    prctl(PR_SET_DUMPABLE, 1)


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets.

    Inside its user namespace the process holds every capability (of that
    namespace) until here; execve as a non-zero uid would clear them too, but
    the warm and in-process paths never exec, so this is done explicitly.
    """
    for capability in range(_MAX_CAPABILITY + 1):
        try:
            if prctl(PR_CAPBSET_READ, capability):
                prctl(PR_CAPBSET_DROP, capability)
        except OSError:  # EINVAL past the kernel's last capability
            break
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = u32(_LINUX_CAPABILITY_VERSION_3) + u32(0)
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    syscall(SYS_CAPSET, header, data)


def set_no_new_privs() -> None:
    """No execve can grant privileges again (setuid bits, file capabilities)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if prctl(PR_GET_NO_NEW_PRIVS) != 1:
        raise OSError("no_new_privs did not stick")
