"""Compile the seccomp filter with libseccomp (pyseccomp), in the service process only.

Importing pyseccomp runs a library lookup (~10 ms) and building a filter a
few ms more: both happen once per policy here, never per run. The result is
raw BPF bytes that :func:`sandbox.jail.seccomp.load` installs in the jail.
"""

from __future__ import annotations

import errno
import io
import struct
from functools import lru_cache

import pyseccomp

from sandbox.jail.seccomp import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT
from sandbox.jail.syscalls import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    ALLOWED,
    ALWAYS_REFUSED,
    ARGUMENT_REFUSALS,
    CLONE_NAMESPACE_FLAGS,
    MFD_NOEXEC_SEAL,
    PERSONALITY_QUERY,
)

ACT_NOTIFY = 0x7FC00000
ACT_ERRNO = 0x00050000
_ATTR_ACT_BADARCH = pyseccomp.Attr.ACT_BADARCH


def _known(name: str) -> bool:
    try:
        pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    except Exception:  # noqa: BLE001 - libseccomp raises various errors for unknown names
        return False
    return True


SOCK_STREAM = 1
SOCK_TYPE_MASK = 0xF
"""The socket type's bits of ``socket()``'s second argument (the rest: CLOEXEC, NONBLOCK)."""
IPPROTO_TCP = 6


@lru_cache(maxsize=64)
def compile_filter(
    network: bool,
    denied: frozenset[str],
    notify: bool,
    egress: bool = False,
    exec_written: bool = False,
) -> bytes:
    """BPF for the default-deny allowlist minus `denied`; cached per distinct policy.

    Sockets: unix ones always; `network` (the host's network) any inet
    socket; `egress` (the run reaches the egress proxy on its own loopback)
    inet TCP stream sockets only: no UDP, raw, packet or netlink socket, no
    other stream protocol (SCTP, MPTCP).

    Without `exec_written`, ``memfd_create`` only with ``MFD_NOEXEC_SEAL``: a
    memory file the run writes could otherwise be executed (Landlock does
    not see such files, and no mount of theirs is noexec).
    """
    refuse = ACT_NOTIFY if notify else pyseccomp.ERRNO(errno.EPERM)
    syscall_filter = pyseccomp.SyscallFilter(refuse)
    # Only x86_64: libseccomp's filter also sends x32 numbers (bit 30 set) here.
    syscall_filter.set_attr(_ATTR_ACT_BADARCH, pyseccomp.KILL_PROCESS)
    syscall_filter.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # the jail sets no_new_privs itself
    # A binary tree over syscall numbers instead of a linear scan: every
    # syscall of the tool pays this filter.
    syscall_filter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    sealed_memfd = not exec_written and "memfd_create" not in denied
    for name in ALLOWED:
        if name in denied or name in ALWAYS_REFUSED or not _known(name):
            continue
        if name == "memfd_create" and sealed_memfd:
            syscall_filter.add_rule(
                pyseccomp.ALLOW,
                name,
                pyseccomp.Arg(1, pyseccomp.MASKED_EQ, MFD_NOEXEC_SEAL, MFD_NOEXEC_SEAL),
            )
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
        if egress and not network:
            # Each argument compared as 64 bits (stricter than the kernel's
            # 32-bit int): high bits set never pass.
            for domain in (AF_INET, AF_INET6):
                for protocol in (0, IPPROTO_TCP):
                    syscall_filter.add_rule(
                        pyseccomp.ALLOW,
                        "socket",
                        pyseccomp.Arg(0, pyseccomp.EQ, domain),
                        pyseccomp.Arg(1, pyseccomp.MASKED_EQ, SOCK_TYPE_MASK, SOCK_STREAM),
                        pyseccomp.Arg(2, pyseccomp.EQ, protocol),
                    )
    buffer = io.BytesIO()
    _export(syscall_filter, buffer)
    refuse_code = ACT_NOTIFY if notify else ACT_ERRNO | errno.EPERM
    return argument_refusals(refuse_code, denied) + buffer.getvalue()


# Classic BPF, as the kernel runs a seccomp program over struct seccomp_data
# (nr at 0, arch at 4, args[i] at 16 + 8 i; x86_64 is little-endian, so the
# low 32 bits of an argument are at that offset).
_LD_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JA = 0x05
_RET = 0x06
_MAX_JUMP = 255


def argument_refusals(refuse: int, denied: frozenset[str] = frozenset()) -> bytes:
    """BPF run before libseccomp's program: :data:`ARGUMENT_REFUSALS` answered `refuse`.

    libseccomp compares an argument as 64 bits and takes one comparison per
    argument and rule, while the kernel reads a pid or a command as 32 bits:
    (1 << 32) | 1 passes a 64-bit "not 1" and still names pid 1. This
    prefix compares the low 32 bits exactly; what it does not refuse falls
    through to the main program. A syscall of another architecture (i386, or
    x32: bit 30 of the number) goes to the jail's init when `refuse` is a
    notification (init names it, then kills its caller with SIGSYS: see
    :func:`sandbox.jail.seccomp.refuse_notification`); otherwise to the main
    program, which kills its caller.
    """
    notify = refuse == ACT_NOTIFY
    foreign = "refuse" if notify else "pass"
    numbers = {name: _number(name) for name in ARGUMENT_REFUSALS if name not in denied}
    rules = [(numbers[name], ARGUMENT_REFUSALS[name]) for name in sorted(numbers)]
    # Instructions with symbolic jump targets: ("label", name) marks a place.
    program: list[tuple[object, ...]] = [
        (_LD_ABS, 0, 0, 4),
        (_JEQ, None, foreign, AUDIT_ARCH_X86_64),
        (_LD_ABS, 0, 0, 0),
    ]
    if notify:
        program.append((_JGE, "refuse", None, X32_SYSCALL_BIT))
    for number, _ in rules:
        program.append((_JEQ, f"check-{number}", None, number))
    program.append((_JA, 0, 0, "pass"))
    for number, alternatives in rules:
        program.append(("label", f"check-{number}"))
        for index, conditions in enumerate(alternatives):
            following = f"alternative-{number}-{index}"
            for argument, value in conditions:
                program.append((_LD_ABS, 0, 0, 16 + 8 * argument))
                program.append((_JEQ, None, following, value))
            program.append((_JA, 0, 0, "refuse"))
            program.append(("label", following))
        program.append((_JA, 0, 0, "pass"))
    program.append(("label", "refuse"))
    program.append((_RET, 0, 0, refuse))
    program.append(("label", "pass"))
    return _assemble(program)


def _assemble(program: list[tuple[object, ...]]) -> bytes:
    """Resolve labels into forward jump offsets and pack `struct sock_filter` items."""
    places: dict[object, int] = {}
    instructions: list[tuple[object, ...]] = []
    for item in program:
        if item[0] == "label":
            places[item[1]] = len(instructions)
        else:
            instructions.append(item)
    packed = []
    for position, (code, true, false, value) in enumerate(instructions, start=1):
        jumps = [_offset(target, places, position) for target in (true, false, value)]
        if code == _JA:
            packed.append(struct.pack("<HBBI", code, 0, 0, jumps[2]))
            continue
        assert max(jumps[:2]) <= _MAX_JUMP, "argument prefix too long for a conditional jump"
        packed.append(struct.pack("<HBBI", code, jumps[0], jumps[1], value))
    return b"".join(packed)


def _offset(target: object, places: dict[object, int], following: int) -> int:
    """A jump's offset from the instruction at `following` (labels resolved; None: 0)."""
    if target is None:
        return 0
    if isinstance(target, int):
        return target
    distance = places[target] - following
    assert distance >= 0, f"backward jump to {target}"
    return distance


def _number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


@lru_cache(maxsize=1024)
def syscall_name(number: int) -> str:
    """The native syscall's name for a refusal report (``syscall_N`` when unknown)."""
    try:
        name = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, number)
    except Exception:  # noqa: BLE001 - libseccomp raises various errors for unknown numbers
        return f"syscall_{number}"
    return name.decode() if isinstance(name, bytes) else str(name)


AUDIT_ARCH_I386 = 0x40000003


@lru_cache(maxsize=256)
def foreign_syscall_name(arch: int, number: int) -> str:
    """A syscall of another architecture in words: ``i386 syscall 20 (getpid)``."""
    if arch == AUDIT_ARCH_I386:
        abi, table = "i386", pyseccomp.Arch.X86
    elif arch == AUDIT_ARCH_X86_64 and number & X32_SYSCALL_BIT:
        abi, table = "x32", pyseccomp.Arch.X32
    else:
        return f"syscall {number} of architecture {arch:#x}"
    try:
        name = pyseccomp.resolve_syscall(table, number)
    except Exception:  # noqa: BLE001 - libseccomp raises various errors for unknown numbers
        return f"{abi} syscall {number & ~X32_SYSCALL_BIT}"
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"{abi} syscall {number & ~X32_SYSCALL_BIT} ({name})"


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
