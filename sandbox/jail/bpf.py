"""Compile the seccomp filter with libseccomp (pyseccomp), in the service process only.

Importing pyseccomp runs a library lookup (~10 ms) and building a filter a
few ms more: both happen once per policy here, never per run. The result is
raw BPF bytes that :func:`sandbox.jail.seccomp.load` installs in the jail.
"""

from __future__ import annotations

import errno
import io
from functools import lru_cache

import pyseccomp

from sandbox.jail.seccomp import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    ALLOWED,
    ALWAYS_REFUSED,
    CLONE_NAMESPACE_FLAGS,
    PERSONALITY_QUERY,
)

ACT_NOTIFY = 0x7FC00000
_ATTR_ACT_BADARCH = pyseccomp.Attr.ACT_BADARCH


def _known(name: str) -> bool:
    try:
        pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    except Exception:  # noqa: BLE001 - libseccomp raises various errors for unknown names
        return False
    return True


@lru_cache(maxsize=64)
def compile_filter(network: bool, denied: frozenset[str], notify: bool) -> bytes:
    """BPF for the default-deny allowlist minus `denied`; cached per distinct policy."""
    refuse = ACT_NOTIFY if notify else pyseccomp.ERRNO(errno.EPERM)
    syscall_filter = pyseccomp.SyscallFilter(refuse)
    # Only x86_64: libseccomp's filter also sends x32 numbers (bit 30 set) here.
    syscall_filter.set_attr(_ATTR_ACT_BADARCH, pyseccomp.KILL_PROCESS)
    syscall_filter.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # the jail sets no_new_privs itself
    # A binary tree over syscall numbers instead of a linear scan: every
    # syscall of the tool pays this filter.
    syscall_filter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    for name in ALLOWED:
        if name in denied or name in ALWAYS_REFUSED or not _known(name):
            continue
        syscall_filter.add_rule(pyseccomp.ALLOW, name)
    if "clone" not in denied:
        syscall_filter.add_rule(
            pyseccomp.ALLOW,
            "clone",
            pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0),
        )
    syscall_filter.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    syscall_filter.add_rule(
        pyseccomp.ALLOW, "personality", pyseccomp.Arg(0, pyseccomp.EQ, PERSONALITY_QUERY)
    )
    if "socket" not in denied:
        domains = (AF_UNIX, AF_INET, AF_INET6) if network else (AF_UNIX,)
        for domain in domains:
            syscall_filter.add_rule(
                pyseccomp.ALLOW, "socket", pyseccomp.Arg(0, pyseccomp.EQ, domain)
            )
    buffer = io.BytesIO()
    _export(syscall_filter, buffer)
    return buffer.getvalue()


def _export(syscall_filter: pyseccomp.SyscallFilter, buffer: io.BytesIO) -> None:
    import os
    import tempfile

    with tempfile.TemporaryFile() as handle:
        syscall_filter.export_bpf(handle)
        handle.flush()
        os.lseek(handle.fileno(), 0, os.SEEK_SET)
        buffer.write(handle.read())


def allowlist_size(network: bool = False) -> int:
    """How many syscalls the default filter lets through (conditional ones included)."""
    names = {name for name in ALLOWED if name not in ALWAYS_REFUSED and _known(name)}
    return len(names | {"clone", "personality", "socket"})
