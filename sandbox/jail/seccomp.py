"""seccomp: a default-deny syscall allowlist, loaded last, just before the tool runs.

The filter itself is compiled once per policy in the service process
(:mod:`sandbox.host.bpf`, with libseccomp); the jail only loads the bytes
(:func:`load`). Refused syscalls do not run; they answer EPERM. When the
kernel offers seccomp user notification, a refusal is a notification that
the jail's init (pid 1, outside the filter's reach of the tool) answers with
EPERM and counts: that is the run's ``seccomp_refusals``. clone3 answers
ENOSYS (not counted: libc then falls back to clone, whose flags the filter
can inspect). A syscall of another architecture (i386 via int 0x80, x32)
kills its caller (SIGSYS): by the filter itself, or, with user
notification, by init once it has noted which syscall it was.
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

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
PERSONALITY_QUERY = 0xFFFFFFFF
MFD_NOEXEC_SEAL = 0x0008

ALWAYS_REFUSED: frozenset[str] = frozenset(
    {
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "mount",
        "umount2",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "clock_settime",
        "settimeofday",
        "adjtimex",
        "clock_adjtime",
        "iopl",
        "ioperm",
        "modify_ldt",
        "personality",
        "name_to_handle_at",
        "open_by_handle_at",
        "fanotify_init",
        "fanotify_mark",
        "inotify_init",
        "inotify_init1",
        "inotify_add_watch",
        "inotify_rm_watch",
        "pidfd_getfd",
        "acct",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "vhangup",
        "syslog",
        "uselib",
        "ustat",
        "sysfs",
        "_sysctl",
        "nfsservctl",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "mknod",
        "mknodat",
        "seccomp",
        "process_madvise",
        "migrate_pages",
        "move_pages",
        "mbind",
        "set_mempolicy",
        "kcmp",
        "pidfd_send_signal",
        "setuid",
        "setgid",
        "setreuid",
        "setregid",
        "setresuid",
        "setresgid",
        "setfsuid",
        "setfsgid",
        "setgroups",
        "capset",
        "sethostname",
        "setdomainname",
        "vmsplice",
        "sync",
        "syncfs",
    }
)
"""Never allowed, whatever the policy says (personality: only its query form, below).

The inotify family is here with fanotify: a watch on a file another run
also opens (a device node, a read-only system file) would show what that
run does."""

INIT_PID = 1
"""The jail's init in the tool's pid namespace: the one process there the tool did not create."""
PR_SET_SECCOMP = 22
F_SETLEASE = 1024
F_NOTIFY = 1026
PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2

ARGUMENT_REFUSALS: dict[str, tuple[tuple[tuple[int, int], ...], ...]] = {
    **{
        name: (((0, INIT_PID),),)
        for name in (
            "prlimit64",
            "sched_setaffinity",
            "sched_setscheduler",
            "sched_setparam",
            "kill",
            "tkill",
            "tgkill",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "pidfd_open",
            "get_robust_list",
        )
    },
    # which, who: init by pid, init's process group (the tool's own is
    # init's: who 0), or every process of the jail uid (init included).
    **{
        name: (((1, INIT_PID),), ((0, PRIO_USER),), ((0, PRIO_PGRP), (1, 0)))
        for name in ("setpriority", "getpriority")
    },
    # A filter of the tool's own, stacked on the jail's, would answer refused
    # calls itself (its ERRNO outranks the jail's notification): uncounted.
    "prctl": (((0, PR_SET_SECCOMP),),),
    # Leases and directory notifications tell a process who else opens a file.
    "fcntl": (((1, F_SETLEASE),), ((1, F_NOTIFY),)),
}
"""Allowed syscalls refused for some arguments: syscall -> alternatives, each a list
of (argument index, value) that must all hold (compared as the kernel reads them,
the low 32 bits). Above all: nothing that names init (pid 1) or a group holding it,
so the tool can change no limit, priority, affinity or scheduling of its supervisor.
"""

ALLOWED: tuple[str, ...] = (
    # memory
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "munlock",
    "get_mempolicy",
    "membarrier",
    # files and dirs
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "lseek",
    "access",
    "faccessat",
    "faccessat2",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "umask",
    "truncate",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "flock",
    "fcntl",
    "ioctl",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "sendfile",
    "splice",
    "tee",
    "copy_file_range",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "fadvise64",
    "readahead",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "memfd_create",
    "sync_file_range",
    # polling, events, timers
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "alarm",
    "getitimer",
    "setitimer",
    "pause",
    # signals
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "kill",
    "tkill",
    "tgkill",
    "restart_syscall",
    # processes and threads (clone: see the flag rule)
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "futex",
    "futex_waitv",
    "rseq",
    "arch_prctl",
    "prctl",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "getpriority",
    "setpriority",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "pidfd_open",
    "getcpu",
    "getrandom",
    "uname",
    "sysinfo",
    # identity (read only)
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getpgid",
    "getpgrp",
    "getsid",
    "setpgid",
    "setsid",
    "capget",
    # local IPC inside the jail's IPC namespace
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    # sockets (socket itself: see the domain rule)
    "socketpair",
    "connect",
    "accept",
    "accept4",
    "bind",
    "listen",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    # Landlock can only restrict further
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
)
"""Allowed outright (unless a policy denies some): enough for Python and ordinary CLI tools."""


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
