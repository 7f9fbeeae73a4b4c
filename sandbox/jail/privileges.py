"""Privileges: never root, no capabilities, no way to gain any (no_new_privs)."""

from __future__ import annotations

import errno
import os

from sandbox.jail.libc import (
    SYS_CAPGET,
    SYS_CAPSET,
    buffer_bytes,
    prctl,
    syscall,
    u32,
    writable_buffer,
)

PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_SYS_ADMIN = 21
_KEY_CAPABILITIES = (0, 1, 6, 7, 8, 12, 19, 21, 24)
"""chown, dac_override, setgid, setuid, setpcap, net_admin, sys_ptrace, sys_admin, sys_resource."""
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


def check_unprivileged_launcher() -> None:
    """Unprivileged mode: the caller is not root and holds no group the jail cannot drop.

    Without CAP_SETGID the supplementary groups stay with the process
    through its user namespace (setgroups is denied there): a tool would
    keep whatever file access they grant. Only the primary group is
    accepted; run the service with no others (compose's ``user: UID:GID``,
    ``setpriv --clear-groups``).
    """
    if os.geteuid() == 0 or os.getuid() == 0:
        raise OSError("unprivileged mode as root")
    extra = set(os.getgroups()) - {os.getegid()}
    if extra:
        raise OSError(f"supplementary groups {sorted(extra)} would stay with the tool")


def own_session() -> None:
    """Lead a session and process group of its own (nothing to do if it leads one already).

    Priorities and signals can name a process group: a run must share one
    with no other run, no zygote and not the service (see the seccomp
    layer's argument rules for what the tool may still name in its own).
    """
    try:
        os.setsid()
    except PermissionError:
        if os.getsid(0) != os.getpid():
            raise  # the leader of another process group, yet not of a session


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
    a warm run never execs, so this is done explicitly.
    """
    for capability in range(_MAX_CAPABILITY + 1):
        try:
            # Dropping one already absent is a no-op: no need to read it first.
            prctl(PR_CAPBSET_DROP, capability)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise  # a capability that cannot be dropped: fail closed
            break  # past the kernel's last capability
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = u32(_LINUX_CAPABILITY_VERSION_3) + u32(0)
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    syscall(SYS_CAPSET, header, data)


def check_no_capabilities() -> None:
    """Verify what :func:`drop_capabilities` in the parent left: no capability at all.

    The tool is forked from the jail's init after init dropped everything;
    this checks the inheritance (a few syscalls) rather than redoing it
    (~90 prctl calls).
    """
    header = u32(_LINUX_CAPABILITY_VERSION_3) + u32(0)
    data, address = writable_buffer(24)
    syscall(SYS_CAPGET, header, address)
    if any(buffer_bytes(data)):
        raise OSError("capability sets are not empty")
    for capability in _KEY_CAPABILITIES:
        if prctl(PR_CAPBSET_READ, capability):
            raise OSError(f"capability {capability} still in the bounding set")
    if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, _CAP_SYS_ADMIN):
        raise OSError("ambient capabilities are set")


def set_no_new_privs() -> None:
    """No execve can grant privileges again (setuid bits, file capabilities)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if prctl(PR_GET_NO_NEW_PRIVS) != 1:
        raise OSError("no_new_privs did not stick")
