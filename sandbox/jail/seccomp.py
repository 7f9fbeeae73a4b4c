"""seccomp: a default-deny syscall allowlist, loaded last, just before the tool runs.

The filter itself is compiled once per policy in the service process
(:mod:`sandbox.host.bpf`, with libseccomp) from the tables of
:mod:`sandbox.jail.syscalls`; the jail only loads the bytes (:func:`load`)
and answers the refusals it is notified of (:func:`refuse_notification`).

Refused syscalls do not run; they answer EPERM. When the kernel offers
seccomp user notification, a refusal is a notification that the jail's
init (pid 1, outside the filter's reach of the tool) answers with EPERM and
counts: that is the run's ``seccomp_refusals``. clone3 answers ENOSYS (not
counted: libc then falls back to clone, whose flags the filter can
inspect). A syscall of another architecture (i386 via int 0x80, x32) kills
its caller (SIGSYS): by the filter itself, or, with user notification, by
init once it has noted which syscall it was.
"""

from __future__ import annotations

import errno
import fcntl
import os
from _signal import SIGSYS

from sandbox.jail.libc import SYS_SECCOMP, address_of, s32, syscall, u32, u64

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
_NOTIF_SIZE = 80

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
FOREIGN = -2
"""In a refused call's report, instead of a number: a syscall of another
architecture, followed by its architecture (AUDIT_ARCH_*) and its number."""


def load(bpf: bytes, notify: bool) -> int | None:
    """Install the compiled filter on the calling thread; return the listener fd if `notify`."""
    if len(bpf) % 8 or not bpf:
        raise ValueError("seccomp program must be a non-empty array of 8-byte instructions")
    program, program_address = address_of(bpf)
    fprog = (len(bpf) // 8).to_bytes(2, "little") + bytes(6) + u64(program_address)
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER if notify else 0
    result = syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, fprog)
    del program
    return result if notify else None


DECISIVE_ARGUMENTS: dict[int, tuple[int, ...]] = {
    41: (0, 1),  # socket: domain, type
    56: (0,),  # clone: flags
    62: (0,),  # kill: pid
    72: (1,),  # fcntl: command
    101: (0,),  # ptrace: request
    129: (0,),  # rt_sigqueueinfo: pid
    135: (0,),  # personality: persona
    140: (0, 1),  # getpriority: which, who
    141: (0, 1),  # setpriority: which, who
    142: (0,),  # sched_setparam: pid
    144: (0,),  # sched_setscheduler: pid
    157: (0,),  # prctl: option
    200: (0,),  # tkill: tid
    203: (0,),  # sched_setaffinity: pid
    234: (0,),  # tgkill: tgid
    250: (0,),  # keyctl: operation
    272: (0,),  # unshare: flags
    274: (0,),  # get_robust_list: pid
    297: (0,),  # rt_tgsigqueueinfo: tgid
    302: (0,),  # prlimit64: pid
    308: (1,),  # setns: namespace type
    317: (0,),  # seccomp: operation
    319: (1,),  # memfd_create: flags
    321: (0,),  # bpf: command
    434: (0,),  # pidfd_open: pid
}
"""x86_64 syscall number -> the arguments that say what a refused call was
after (a socket's domain and type, ptrace's request, unshare's flags...),
kept with its refusal so the service can name it: ``socket(AF_INET,
SOCK_STREAM)``, not just ``socket``. Only numbers: no pointer is followed."""


def refuse_notification(listener_fd: int) -> tuple[int, ...] | None:
    """Answer one pending notification with EPERM; what was refused.

    The refused syscall's number followed by its :data:`DECISIVE_ARGUMENTS`
    (low 32 bits, as the kernel reads them). None if the notification
    vanished before it was received (its caller died or was interrupted:
    the syscall did not run either).

    A syscall of another architecture (which the filter sends here only to
    be named: see :func:`sandbox.host.bpf.argument_refusals`) is reported as
    ``(FOREIGN, arch, number)``, and its caller gets SIGSYS first, as the
    filter's own kill would: it never runs either way.
    """
    notification = bytearray(_NOTIF_SIZE)
    try:
        fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_RECV, notification, True)
    except OSError:
        return None
    number = int.from_bytes(notification[16:20], "little", signed=True)
    arch = int.from_bytes(notification[20:24], "little")
    foreign = arch != AUDIT_ARCH_X86_64 or number & X32_SYSCALL_BIT
    if foreign:
        try:
            # The caller's pid as init sees it: they share the pid namespace.
            os.kill(int.from_bytes(notification[8:12], "little"), SIGSYS)
        except OSError:
            pass  # gone already
    response = bytearray(bytes(notification[:8]) + u64(0) + s32(-errno.EPERM) + u32(0))
    try:
        fcntl.ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_SEND, response, True)
    except OSError:
        pass  # the caller died or was interrupted: the syscall did not run either way
    # struct seccomp_notif: id, pid, flags, then seccomp_data: nr, arch,
    # instruction pointer, six arguments of 8 bytes from offset 32.
    if foreign:
        return (FOREIGN, arch, number)
    return (number,) + tuple(
        int.from_bytes(notification[32 + 8 * index : 36 + 8 * index], "little")
        for index in DECISIVE_ARGUMENTS.get(number, ())
    )
