"""Denials: what the jail refused a run, named for a person, with the policy key behind it.

The jail's supervisor (its init, outside the tool's reach) reports each
syscall the seccomp filter refused with the arguments that say what it was
after (:data:`sandbox.jail.seccomp.DECISIVE_ARGUMENTS`); the service knows
which limit stopped a run. This module turns both into :class:`Denial`
entries (``socket(AF_INET, SOCK_STREAM)``, ``ptrace(PTRACE_ATTACH)``,
``memory_bytes = 256 MiB``), each with a hint naming the policy key that
governs it, or saying that nothing in the policy can allow it. Entries are
aggregated by what was refused and bounded (:data:`MAX_DENIALS`). The tool's
own output never makes an entry: a program that prints a line that looks
like one only adds to its stderr.
"""

from __future__ import annotations

from collections.abc import Iterable

from sandbox.host.bpf import foreign_syscall_name, syscall_name
from sandbox.jail.seccomp import FOREIGN
from sandbox.jail.syscalls import (
    AF_INET,
    AF_INET6,
    ALWAYS_REFUSED,
    ARGUMENT_REFUSALS,
    CLONE_NAMESPACE_FLAGS,
    REFUSED_FAMILIES,
)
from sandbox.spec import Denial, LimitName, RunLimits, RunSpec

MAX_DENIALS = 32
"""Entries in one result at most; the rest are counted in one last entry."""

STDERR_PREFIX = "pagi-sandbox: "
"""How the lines appended to a run's stderr begin (see :func:`stderr_lines`)."""

NOTHING_ALLOWS = "nothing in the policy can allow it"

_ADDRESS_FAMILIES = {
    0: "AF_UNSPEC",
    1: "AF_UNIX",
    2: "AF_INET",
    3: "AF_AX25",
    4: "AF_IPX",
    5: "AF_APPLETALK",
    9: "AF_X25",
    10: "AF_INET6",
    15: "AF_KEY",
    16: "AF_NETLINK",
    17: "AF_PACKET",
    29: "AF_CAN",
    30: "AF_TIPC",
    31: "AF_BLUETOOTH",
    38: "AF_ALG",
    40: "AF_VSOCK",
    41: "AF_KCM",
    42: "AF_QIPCRTR",
    44: "AF_XDP",
    45: "AF_MCTP",
}
_SOCKET_TYPES = {
    1: "SOCK_STREAM",
    2: "SOCK_DGRAM",
    3: "SOCK_RAW",
    4: "SOCK_RDM",
    5: "SOCK_SEQPACKET",
    6: "SOCK_DCCP",
    10: "SOCK_PACKET",
}
_SOCKET_TYPE_MASK = 0xF
"""The type without SOCK_NONBLOCK and SOCK_CLOEXEC."""
_PTRACE_REQUESTS = {
    0: "PTRACE_TRACEME",
    1: "PTRACE_PEEKTEXT",
    2: "PTRACE_PEEKDATA",
    3: "PTRACE_PEEKUSER",
    4: "PTRACE_POKETEXT",
    5: "PTRACE_POKEDATA",
    6: "PTRACE_POKEUSER",
    7: "PTRACE_CONT",
    8: "PTRACE_KILL",
    9: "PTRACE_SINGLESTEP",
    12: "PTRACE_GETREGS",
    13: "PTRACE_SETREGS",
    16: "PTRACE_ATTACH",
    17: "PTRACE_DETACH",
    24: "PTRACE_SYSCALL",
    0x4200: "PTRACE_SETOPTIONS",
    0x4206: "PTRACE_SEIZE",
    0x4207: "PTRACE_INTERRUPT",
}
_NAMESPACE_FLAGS = {
    0x00000080: "CLONE_NEWTIME",
    0x00020000: "CLONE_NEWNS",
    0x02000000: "CLONE_NEWCGROUP",
    0x04000000: "CLONE_NEWUTS",
    0x08000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER",
    0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET",
}
_UNSHARE_FLAGS = {
    **_NAMESPACE_FLAGS,
    0x200: "CLONE_FS",
    0x400: "CLONE_FILES",
    0x40000: "CLONE_SYSVSEM",
}
_KEYCTL_OPERATIONS = {
    0: "KEYCTL_GET_KEYRING_ID",
    1: "KEYCTL_JOIN_SESSION_KEYRING",
    2: "KEYCTL_UPDATE",
    3: "KEYCTL_REVOKE",
    4: "KEYCTL_CHOWN",
    5: "KEYCTL_SETPERM",
    6: "KEYCTL_DESCRIBE",
    7: "KEYCTL_CLEAR",
    8: "KEYCTL_LINK",
    9: "KEYCTL_UNLINK",
    10: "KEYCTL_SEARCH",
    11: "KEYCTL_READ",
}
_BPF_COMMANDS = {
    0: "BPF_MAP_CREATE",
    1: "BPF_MAP_LOOKUP_ELEM",
    2: "BPF_MAP_UPDATE_ELEM",
    3: "BPF_MAP_DELETE_ELEM",
    4: "BPF_MAP_GET_NEXT_KEY",
    5: "BPF_PROG_LOAD",
    6: "BPF_OBJ_PIN",
    7: "BPF_OBJ_GET",
    8: "BPF_PROG_ATTACH",
    9: "BPF_PROG_DETACH",
}
_SECCOMP_OPERATIONS = {
    0: "SECCOMP_SET_MODE_STRICT",
    1: "SECCOMP_SET_MODE_FILTER",
    2: "SECCOMP_GET_ACTION_AVAIL",
    3: "SECCOMP_GET_NOTIF_SIZES",
}
_PRCTL_OPTIONS = {22: "PR_SET_SECCOMP"}
_MEMFD_FLAGS = {
    0x1: "MFD_CLOEXEC",
    0x2: "MFD_ALLOW_SEALING",
    0x4: "MFD_HUGETLB",
    0x8: "MFD_NOEXEC_SEAL",
    0x10: "MFD_EXEC",
}
_FCNTL_COMMANDS = {1024: "F_SETLEASE", 1026: "F_NOTIFY"}
_PRIORITY_WHICH = {0: "PRIO_PROCESS", 1: "PRIO_PGRP", 2: "PRIO_USER"}
_SETNS_TYPES = {0: "any namespace", **_NAMESPACE_FLAGS}

_NAMED_ARGUMENTS: dict[str, tuple[dict[int, str], ...]] = {
    "socket": (_ADDRESS_FAMILIES, _SOCKET_TYPES),
    "ptrace": (_PTRACE_REQUESTS,),
    "keyctl": (_KEYCTL_OPERATIONS,),
    "bpf": (_BPF_COMMANDS,),
    "seccomp": (_SECCOMP_OPERATIONS,),
    "prctl": (_PRCTL_OPTIONS,),
    "fcntl": (_FCNTL_COMMANDS,),
    "setns": (_SETNS_TYPES,),
    "setpriority": (_PRIORITY_WHICH, {}),
    "getpriority": (_PRIORITY_WHICH, {}),
}
"""Syscall -> how to name each of its decisive arguments (unnamed values print as numbers)."""

_FAMILY_OF: dict[str, str] = {
    name: family for family, names in REFUSED_FAMILIES.items() for name in names
} | {"clone": "a new or another namespace"}  # clone: refused with namespace flags only
"""Syscall -> the family of always refused calls its hint names."""
_SUPERVISOR_CALLS = frozenset(ARGUMENT_REFUSALS) - {"prctl", "fcntl"}
_LIMIT_KEYS: dict[LimitName, str] = {
    "wall_time": "wall_seconds",
    "cpu_time": "cpu_seconds",
    "memory": "memory_bytes",
    "file_size": "file_size_bytes",
    "output": "output_bytes",
    "processes": "processes",
    "open_files": "open_files",
}


def _flags(value: int, names: dict[int, str]) -> str:
    named = [name for bit, name in names.items() if value & bit]
    rest = value & ~sum(bit for bit in names if value & bit)
    return "|".join(named + ([hex(rest)] if rest else [])) or "0"


def describe_call(number: int, arguments: tuple[int, ...]) -> tuple[str, str]:
    """The syscall's name, and the call in words: ``socket(AF_INET, SOCK_STREAM)``."""
    name = syscall_name(number)
    if not arguments:
        return name, name
    if name == "socket" and len(arguments) == 2:
        arguments = (arguments[0], arguments[1] & _SOCKET_TYPE_MASK)
    if name == "memfd_create":
        return name, f"memfd_create({_flags(arguments[0], _MEMFD_FLAGS)})"
    if name in ("unshare", "clone"):
        flags = arguments[0] & (CLONE_NAMESPACE_FLAGS if name == "clone" else ~0)
        return name, f"{name}({_flags(flags, _UNSHARE_FLAGS)})"
    tables = _NAMED_ARGUMENTS.get(name, ())
    words = [
        (tables[index].get(value) if index < len(tables) else None) or str(value)
        for index, value in enumerate(arguments)
    ]
    return name, f"{name}({', '.join(words)})"


def _seccomp_hint(name: str, arguments: tuple[int, ...], spec: RunSpec) -> str:
    if name in spec.denied_syscalls:
        return f"denied to this tool by its policy (tools.{spec.tool}.denied_syscalls)"
    if name == "socket" and arguments:
        if arguments[0] in (AF_INET, AF_INET6) and not spec.network:
            return f"this tool has no network (tools.{spec.tool}.network)"
        family = _ADDRESS_FAMILIES.get(arguments[0], f"address family {arguments[0]}")
        return f"only unix and IP sockets exist in the jail: {NOTHING_ALLOWS} ({family})"
    if name == "memfd_create":
        return (
            "a memory file that could be executed (only MFD_NOEXEC_SEAL ones): written"
            f" files never run (tools.{spec.tool}.allow_exec_written)"
        )
    if name in _FAMILY_OF:
        return f"{_FAMILY_OF[name]} is always refused: {NOTHING_ALLOWS}"
    if name in _SUPERVISOR_CALLS:
        return f"the jail's supervisor (pid 1) is out of the tool's reach: {NOTHING_ALLOWS}"
    if name in ALWAYS_REFUSED or name in ARGUMENT_REFUSALS:
        return f"always refused: {NOTHING_ALLOWS}"
    return f"not on the jail's syscall allowlist: {NOTHING_ALLOWS}"


def seccomp_denials(
    calls: dict[tuple[int, ...], int], refusals: int, spec: RunSpec
) -> list[Denial]:
    """The refused calls the supervisor named (`calls`), `refusals` in all, as denials."""
    denials: list[Denial] = []
    for (number, *arguments), count in calls.items():
        if number == FOREIGN and len(arguments) == 2:
            denials.append(foreign_syscall_kill(foreign_syscall_name(*arguments), count))
            continue
        name, what = describe_call(number, tuple(arguments))
        denials.append(
            Denial(
                layer="seccomp",
                what=what,
                count=count,
                hint=_seccomp_hint(name, tuple(arguments), spec),
            )
        )
    unnamed = refusals - sum(count for call, count in calls.items() if call[0] != FOREIGN)
    if unnamed > 0:
        denials.append(
            Denial(
                layer="seccomp",
                what="further syscalls",
                count=unnamed,
                hint="refused; the jail names the first 64 distinct refused calls of a run",
            )
        )
    return denials


def foreign_syscall_kill(what: str | None = None, count: int = 1) -> Denial:
    """A process killed (SIGSYS) for a syscall of another architecture: `what`, if known."""
    if what is None:
        return Denial(
            layer="seccomp",
            what="a syscall of another architecture (i386 int 0x80 or x32)",
            count=count,
            hint="the filter kills the process that makes one (SIGSYS); without seccomp"
            f" user notification no one hears which syscall it was: {NOTHING_ALLOWS}",
        )
    return Denial(
        layer="seccomp",
        what=what,
        count=count,
        hint="a syscall of another architecture kills the process that makes it (SIGSYS):"
        f" {NOTHING_ALLOWS}",
    )


def _amount(key: str, value: float) -> str:
    if key.endswith("_seconds"):
        return f"{value:g} s"
    if key.endswith("_bytes"):
        size = int(value)
        for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if size >= scale and size % scale == 0:
                return f"{size // scale} {unit}"
        return f"{size} bytes"
    return f"{value:g}"


def limit_denial(limit: LimitName, limits: RunLimits, tool: str) -> Denial:
    """The limit that stopped the run, with its value and the key that sets it."""
    key = _LIMIT_KEYS[limit]
    value = getattr(limits, key)
    return Denial(
        layer="limit",
        what=f"{key} = {_amount(key, value)}",
        count=1,
        hint=f"this tool's limit (tools.{tool}.limits.{key}, within PAGI's ceiling)",
    )


def bounded(denials: Iterable[Denial]) -> list[Denial]:
    """Entries with the same layer, words and hint merged; at most :data:`MAX_DENIALS`."""
    merged: dict[tuple[str, str, str], int] = {}
    for denial in denials:
        key = (denial.layer, denial.what, denial.hint)
        merged[key] = merged.get(key, 0) + denial.count
    entries = [
        Denial(layer=layer, what=what, count=count, hint=hint)  # type: ignore[arg-type]
        for (layer, what, hint), count in merged.items()
    ]
    if len(entries) <= MAX_DENIALS:
        return entries
    rest = entries[MAX_DENIALS - 1 :]
    return [
        *entries[: MAX_DENIALS - 1],
        Denial(
            layer=rest[0].layer,
            what=f"{len(rest)} further kinds of refusal",
            count=sum(entry.count for entry in rest),
            hint=f"a result lists {MAX_DENIALS - 1} kinds; the audit record has the same",
        ),
    ]


def stderr_lines(denials: Iterable[Denial]) -> str:
    """One line per denial, as appended to the run's stderr."""
    lines = []
    for denial in denials:
        times = f" ({denial.count} times)" if denial.count > 1 else ""
        verb = "stopped at limit" if denial.layer == "limit" else "refused"
        lines.append(f"{STDERR_PREFIX}{verb} {denial.what}{times}: {denial.hint}\n")
    return "".join(lines)
