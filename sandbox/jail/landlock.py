"""Landlock: file system and TCP access rights, enforced by the kernel on the tool.

Raw syscalls (444-446). Handles every access right of the running kernel's
ABI, so anything not granted below is denied: read/execute beneath the
read-only paths, all but execute beneath the working dir and /tmp, read/write
on the device nodes; with ABI >= 4 no TCP bind, and no TCP connect but
to the egress proxy's port for a run that has one (any, for a run given
the host's network); with ABI >= 6 no connection to abstract unix sockets and no
signal to processes outside the jail's Landlock domain.
"""

from __future__ import annotations

import os
import stat

from sandbox.jail.libc import (
    SYS_LANDLOCK_ADD_RULE,
    SYS_LANDLOCK_CREATE_RULESET,
    SYS_LANDLOCK_RESTRICT_SELF,
    s32,
    syscall,
    u64,
)

CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2  # ABI 4

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_EXECUTE = EXECUTE | READ_FILE | READ_DIR


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 when Landlock is unsupported or disabled."""
    try:
        return syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION)
    except OSError:
        return 0


def handled_fs_rights(abi: int) -> int:
    """Every file system right the given ABI knows."""
    rights = (MAKE_SYM << 1) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a listed path this machine lacks grants nothing
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_RIGHTS  # directory rights on a file rule are EINVAL
        syscall(SYS_LANDLOCK_ADD_RULE, ruleset, RULE_PATH_BENEATH, u64(rights) + s32(fd), 0)
    finally:
        os.close(fd)


def restrict(
    abi: int,
    read_paths: list[str],
    write_paths: list[str],
    device_paths: list[str],
    network: bool,
    connect_port: int = 0,
    exec_written: bool = False,
) -> None:
    """Create the ruleset for this run and restrict the calling process (needs no_new_privs).

    `connect_port`: the one TCP port the run may connect to (its egress
    proxy's, in its own network namespace); 0: none. Beneath `write_paths`
    every right but EXECUTE (unless `exec_written`): what the run writes
    cannot be executed, whatever the mount says.
    """
    fs_rights = handled_fs_rights(abi)
    attr = u64(fs_rights)
    if abi >= 4:
        attr += u64(0 if network else NET_BIND_TCP | NET_CONNECT_TCP)
    if abi >= 6:
        attr += u64(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    try:
        for path in read_paths:
            _add_path_rule(ruleset, path, READ_EXECUTE & fs_rights)
        written = fs_rights if exec_written else fs_rights & ~EXECUTE
        for path in write_paths:
            _add_path_rule(ruleset, path, written)
        for path in device_paths:
            _add_path_rule(ruleset, path, (READ_FILE | WRITE_FILE | TRUNCATE) & fs_rights)
        if abi >= 4 and connect_port and not network:
            # struct landlock_net_port_attr: allowed_access, port (both u64).
            rule = u64(NET_CONNECT_TCP) + u64(connect_port)
            syscall(SYS_LANDLOCK_ADD_RULE, ruleset, RULE_NET_PORT, rule, 0)
        syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
