"""Kernel attack surface: every always-refused syscall family, other ABIs, W^X.

Arguments are chosen so that a syscall the filter lets through is harmless
(bad pointers, missing paths, fd -1) and answers something other than EPERM,
so EPERM plus the run's refusal counter is unambiguous evidence of seccomp.
"""

from __future__ import annotations

import errno
import signal

from tests.escape.harness import (
    Attack,
    Check,
    Outcome,
    counted_by_seccomp,
    layer_of,
    seccomp_refused,
    syscalls_of,
)

STRUCTS = r"""
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]

def own_memory_iov():
    source = c_buffer(8)
    target = c_buffer(8)
    local = iovec(ctypes.cast(target, ctypes.c_void_p), 8)
    remote = iovec(ctypes.cast(source, ctypes.c_void_p), 8)
    return (source, target), local, remote

MISSING = ("/nonexistent-" + MARKER).encode()
"""

# (id, program body). Each body reaches the syscall via ``attempt``/``attempt_in_child``
# with the attack id as the label.
SYSCALLS: list[tuple[str, str]] = [
    ("ptrace_traceme", 'attempt_in_child("ptrace_traceme", lambda: raw_syscall(101, 0, 0, 0, 0))'),
    (
        "ptrace_attach_parent",
        'attempt_in_child("ptrace_attach_parent",'
        " lambda: raw_syscall(101, 16, os.getppid(), 0, 0))",
    ),
    (
        "process_vm_readv",
        "keep, local, remote = own_memory_iov()\n"
        'attempt("process_vm_readv", lambda: raw_syscall(310, os.getpid(), ctypes.byref(local), 1,'
        " ctypes.byref(remote), 1, 0))",
    ),
    (
        "process_vm_writev",
        "keep, local, remote = own_memory_iov()\n"
        'attempt("process_vm_writev", lambda: raw_syscall(311, os.getpid(), ctypes.byref(local), 1,'
        " ctypes.byref(remote), 1, 0))",
    ),
    (
        "mount_tmpfs",
        'os.mkdir("mnt")\n'
        'attempt("mount_tmpfs", lambda: raw_syscall(165, b"none", b"mnt", b"tmpfs", 0, None))',
    ),
    ("umount2", 'attempt("umount2", lambda: raw_syscall(166, MISSING, 0))'),
    ("pivot_root", 'attempt("pivot_root", lambda: raw_syscall(155, MISSING, MISSING))'),
    ("chroot", 'attempt("chroot", lambda: raw_syscall(161, MISSING))'),
    ("fsopen", 'attempt("fsopen", lambda: raw_syscall(430, b"tmpfs", 0))'),
    ("open_tree", 'attempt("open_tree", lambda: raw_syscall(428, -100, b"/", 0))'),
    (
        "move_mount",
        'attempt("move_mount", lambda: raw_syscall(429, -1, b"", -1, b"", 0))',
    ),
    (
        "unshare_user",
        'attempt_in_child("unshare_user", lambda: raw_syscall(272, 0x10000000))',
    ),
    (
        "unshare_net_mount",
        'attempt_in_child("unshare_net_mount", lambda: raw_syscall(272, 0x40000000 | 0x00020000))',
    ),
    ("setns", 'attempt("setns", lambda: raw_syscall(308, -1, 0))'),
    ("bpf", 'attempt("bpf", lambda: raw_syscall(321, 0, None, 0))'),
    ("perf_event_open", 'attempt("perf_event_open", lambda: raw_syscall(298, None, 0, -1, -1, 0))'),
    ("keyctl", 'attempt("keyctl", lambda: raw_syscall(250, 0, -3, 0))'),
    ("add_key", 'attempt("add_key", lambda: raw_syscall(248, b"user", b"escape", b"x", 1, -2))'),
    (
        "request_key",
        'attempt("request_key", lambda: raw_syscall(249, b"user", b"escape-missing", None, 0))',
    ),
    ("userfaultfd", 'attempt("userfaultfd", lambda: raw_syscall(323, 0))'),
    (
        "io_uring_setup",
        'params = c_buffer(120)\nattempt("io_uring_setup", lambda: raw_syscall(425, 1, params))',
    ),
    ("io_uring_enter", 'attempt("io_uring_enter", lambda: raw_syscall(426, -1, 0, 0, 0, None, 0))'),
    ("io_uring_register", 'attempt("io_uring_register", lambda: raw_syscall(427, -1, 0, None, 0))'),
    ("kexec_load", 'attempt("kexec_load", lambda: raw_syscall(246, 0, 0, None, 0))'),
    ("kexec_file_load", 'attempt("kexec_file_load", lambda: raw_syscall(320, -1, -1, 0, b"", 0))'),
    ("init_module", 'attempt("init_module", lambda: raw_syscall(175, None, 0, b""))'),
    ("finit_module", 'attempt("finit_module", lambda: raw_syscall(313, -1, b"", 0))'),
    ("delete_module", 'attempt("delete_module", lambda: raw_syscall(176, b"escape_missing", 0))'),
    ("reboot", 'attempt("reboot", lambda: raw_syscall(169, 0, 0, 0, None))'),
    ("swapon", 'attempt("swapon", lambda: raw_syscall(167, MISSING, 0))'),
    ("swapoff", 'attempt("swapoff", lambda: raw_syscall(168, MISSING))'),
    ("clock_settime", 'attempt("clock_settime", lambda: raw_syscall(227, 0, None))'),
    ("settimeofday", 'attempt("settimeofday", lambda: raw_syscall(164, None, None))'),
    ("clock_adjtime", 'attempt("clock_adjtime", lambda: raw_syscall(305, 0, None))'),
    ("iopl", 'attempt("iopl", lambda: raw_syscall(172, 3))'),
    ("ioperm", 'attempt("ioperm", lambda: raw_syscall(173, 0x80, 1, 1))'),
    (
        "modify_ldt",
        'ldt = c_buffer(16)\nattempt("modify_ldt", lambda: raw_syscall(154, 0, ldt, 16))',
    ),
    ("personality", 'attempt("personality", lambda: raw_syscall(135, 0x0040000))'),
    (
        "name_to_handle_at",
        "handle = c_buffer(136)\nctypes.memmove(handle, (128).to_bytes(4, 'little'), 4)\n"
        "mount_id = ctypes.c_int()\n"
        'attempt("name_to_handle_at", lambda: raw_syscall(303, -100, b".", handle,'
        " ctypes.byref(mount_id), 0))",
    ),
    (
        "open_by_handle_at",
        "handle = c_buffer(136)\nctypes.memmove(handle, (8).to_bytes(4, 'little'), 4)\n"
        'attempt("open_by_handle_at", lambda: raw_syscall(304, -1, handle, 0))',
    ),
    ("fanotify_init", 'attempt("fanotify_init", lambda: raw_syscall(300, 0, 0))'),
    ("pidfd_getfd", 'attempt("pidfd_getfd", lambda: raw_syscall(438, -1, 0, 0))'),
    (
        "syslog_read",
        'log = c_buffer(4096)\nattempt("syslog_read", lambda: raw_syscall(103, 3, log, 4096))',
    ),
    ("acct", 'attempt("acct", lambda: raw_syscall(163, MISSING))'),
]

CLONE_TEMPLATE = r"""
def clone_with(flags):
    pid = raw_syscall(56, flags | 17, 0, 0, 0, 0)  # SIGCHLD; a fork-like raw clone
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid

attempt("@LABEL@", lambda: clone_with(@FLAGS@))
"""

CLONE_FLAGS: list[tuple[str, str]] = [
    ("clone_newuser", "0x10000000"),
    ("clone_newnet", "0x40000000"),
    ("clone_newns", "0x00020000"),
    ("clone_newpid", "0x20000000"),
    ("clone_newipc", "0x08000000"),
    ("clone_newuts", "0x04000000"),
    ("clone_newcgroup", "0x02000000"),
    # vfork-style flags as posix_spawn uses them, plus a namespace flag.
    ("clone_vfork_newuser", "0x10000000 | 0x00004000 | 0x00000100"),
    # The kernel reads only the low 32 bits of clone's flags: a filter comparing
    # all 64 must not be fooled by junk in the high half.
    ("clone_newuser_high_bits", "(1 << 32) | 0x10000000"),
]

HIGH_BITS: list[tuple[str, str]] = [
    # socket(int family, ...): the kernel truncates to 32 bits, so this is AF_INET.
    (
        "socket_family_high_bits",
        'attempt("socket_family_high_bits", lambda: raw_syscall(41, (1 << 32) | 2, 1, 0))',
    ),
    (
        "socket_type_high_bits",
        'attempt("socket_type_high_bits",'
        " lambda: raw_syscall(41, (1 << 32) | 10, (1 << 32) | 1, 0))",
    ),
    # personality(unsigned int): a query allowed by value must not let a change through.
    (
        "personality_high_bits",
        'attempt("personality_high_bits", lambda: raw_syscall(135, (1 << 32) | 0x0040000))',
    ),
]

CLONE3 = r"""
args = c_buffer(88)
ctypes.memmove(ctypes.byref(args, 32), (17).to_bytes(8, "little"), 8)  # exit_signal = SIGCHLD

def clone3():
    pid = raw_syscall(435, args, 88)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid

attempt("clone3", clone3)
"""


def answers_enosys(outcome: Outcome) -> str:
    record = outcome.result_of("clone3")
    assert record.get("errno") == errno.ENOSYS, (
        f"clone3 must answer ENOSYS (libc then falls back to clone): {record}"
    )
    return "seccomp"


MACHINE_CODE = r"""
import mmap

def executable_page(code):
    # W^X: write the code into a RW page, then flip it to R+X.
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    ctypes.set_errno(0)
    if LIBC.mprotect(ctypes.c_void_p(address), 4096, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        code_errno = ctypes.get_errno()
        raise OSError(code_errno, "mprotect(PROT_EXEC): " + os.strerror(code_errno))
    return page, address

reached("exec_page")
try:
    PAGE = executable_page(@CODE@)
except OSError as exc:
    report("exec_page", errno=exc.errno, error=str(exc))
    PAGE = None
else:
    report("exec_page", ok=True)
"""

INT80 = (
    MACHINE_CODE.replace(
        "@CODE@",
        r'b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"',  # mov eax, 20 (i386 getpid); int 0x80; ret
    )
    + r"""
if PAGE is not None:
    function = ctypes.CFUNCTYPE(ctypes.c_long)(PAGE[1])
    def call():
        value = function()
        if value < 0:
            raise OSError(-value, os.strerror(-value))
        return value
    attempt_in_child("int80", call)
"""
)

X32 = r"""
attempt_in_child("x32", lambda: raw_syscall(0x40000000 | 39))  # x32 getpid
"""


def other_abi_refused(label: str) -> Check:
    """Check: a syscall of another ABI was refused (killed, or EPERM counted)."""

    def check(outcome: Outcome) -> str:
        if label == "int80":
            page = outcome.result_of("exec_page")
            if not page.get("ok"):
                # No executable memory at all: the int 0x80 attempt cannot even be built.
                return layer_of(outcome, page) + ":no_exec_memory"
        record = outcome.result_of(label)
        if record.get("signal") == signal.SIGSYS:
            return "seccomp"
        if record.get("ok"):
            raise AssertionError(f"NOT CONTAINED: {label} ran: {record}")
        assert record.get("errno") == errno.EPERM and counted_by_seccomp(outcome, record), (
            f"{label}: not refused by seccomp: {record}; {outcome.describe()}"
        )
        return "seccomp"

    return check


REFUSAL_FLOOD = r"""
import time

def flood():
    # 20 000 in a row, or as many as a busy machine lets through in 3 s (each one
    # is a round trip through init), so that the run itself ends normally.
    refused = 0
    deadline = time.monotonic() + 3
    while refused < 20000 and (refused % 500 or time.monotonic() < deadline):
        try:
            raw_syscall(250, 0, -3, 0)  # keyctl: always refused
        except OSError:
            refused += 1
    return refused

attempt("refusal_flood", flood)
"""


def flood_counted(outcome: Outcome) -> str:
    """A flood of refusals (up to 20 000): the run ends normally, each one counted."""
    record = outcome.result_of("refusal_flood")
    assert record.get("ok"), record
    refused = int(record["value"])
    assert refused >= 2000, f"the flood hardly began: {record}"
    counted = outcome.denied_beyond_baseline("keyctl")
    assert counted >= refused, f"{refused} refused, {counted} counted: {outcome.denials}"
    return "seccomp"


NOTIFY_STACKING = r"""
import fcntl
import select
import socket
import struct

# A filter of the tool's own, stacked on the jail's, that turns socket() into a
# user notification the tool answers itself with "continue". If the jail's
# refusals are notifications too, the newest filter's listener wins the tie and
# the refused syscall would run.
SOCKET_NR = 41
program = b"".join([
    struct.pack("HBBI", 0x20, 0, 0, 0),                # ld [nr]
    struct.pack("HBBI", 0x15, 0, 1, SOCKET_NR),        # jeq socket
    struct.pack("HBBI", 0x06, 0, 0, 0x7FC00000),       # ret USER_NOTIF
    struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),       # ret ALLOW
])
filter_buffer = ctypes.create_string_buffer(program)
fprog = struct.pack("HxxxxxxQ", 4, ctypes.addressof(filter_buffer))
fprog_buffer = ctypes.create_string_buffer(fprog)

listener = attempt("own_listener", lambda: raw_syscall(317, 1, 8, fprog_buffer))
if listener is not None:
    child = os.fork()
    if child == 0:
        attempt("inet_socket_via_own_listener",
                lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).fileno())
        os._exit(0)
    ready, _, _ = select.select([listener], [], [], 2)
    if ready:
        notification = bytearray(80)
        fcntl.ioctl(listener, 0xC0502100, notification, True)
        notification_id = struct.unpack_from("Q", notification)[0]
        response = bytearray(struct.pack("QqiI", notification_id, 0, 0, 1))  # CONTINUE
        attempt("answer_continue", lambda: fcntl.ioctl(listener, 0xC0182101, response, True))
    os.waitpid(child, 0)
"""


def own_listener_refused(outcome: Outcome) -> str:
    """Check: the tool cannot become the supervisor of its own refused syscalls."""
    record = outcome.result_of("own_listener")
    if not record.get("ok"):
        # EBUSY: the kernel allows one listener per filter chain, and the jail's has it.
        return layer_of(outcome, record, {errno.EBUSY: "kernel"})
    inner = outcome.result_of("inet_socket_via_own_listener")
    if inner.get("ok"):
        raise AssertionError(
            f"NOT CONTAINED: a refused syscall ran via the tool's own listener: {inner}"
        )
    return layer_of(outcome, inner)


DEFAULT_DENY = r"""
# Syscalls on neither list: a default-deny filter refuses (and counts) each one;
# ENOSYS would mean the filter let an unknown number through to the kernel.
probes = {
    "vhangup": (153,), "uselib": (134, None), "ustat": (136, 0, None), "sysfs": (139, 3),
    "_sysctl": (156, None), "create_module": (174, None, 0), "get_kernel_syms": (177, None),
    "query_module": (178, None, 0, None, 0, None), "nfsservctl": (180, 0, None, None),
    "mbind": (237, None, 0, 0, None, 0, 0), "set_mempolicy": (238, 0, None, 0),
    "migrate_pages": (256, 0, 0, None, None), "move_pages": (279, 0, 0, None, None, None, 0),
    "kcmp": (312, 0, 0, 0, 0, 0), "process_madvise": (440, -1, None, 0, 0, 0),
    "memfd_secret": (447, 0), "unassigned_500": (500,), "unassigned_1000": (1000,),
}
labels = []
for name, call in probes.items():
    labels.append("default_deny_" + name)
    attempt(labels[-1], lambda: raw_syscall(*call))
report("tried", labels=labels)
"""


def every_probe_refused_and_counted(outcome: Outcome) -> str:
    """Check: each unlisted syscall answered EPERM, and each refusal was counted."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels, outcome.describe()
    answers = {label: outcome.result_of(label) for label in labels}
    not_refused = {
        label: record
        for label, record in answers.items()
        if record.get("errno") != errno.EPERM and record.get("signal") != signal.SIGSYS
    }
    assert not not_refused, f"NOT CONTAINED by seccomp (reached the kernel): {not_refused}"
    uncounted = {
        label: syscalls_of(record)
        for label, record in answers.items()
        if record.get("signal") != signal.SIGSYS and not counted_by_seccomp(outcome, record)
    }
    assert not uncounted, f"refused but not counted by name: {uncounted}; {outcome.denials}"
    return "seccomp"


def _syscall_attacks() -> list[Attack]:
    attacks = [
        Attack(name, "kernel", STRUCTS + body, ("seccomp",), seccomp_refused(name))
        for name, body in SYSCALLS
    ]
    for name, flags in CLONE_FLAGS:
        body = CLONE_TEMPLATE.replace("@LABEL@", name).replace("@FLAGS@", flags)
        attacks.append(Attack(name, "kernel", body, ("seccomp",), seccomp_refused(name)))
    for name, body in HIGH_BITS:
        attacks.append(Attack(name, "kernel", body, ("seccomp",), seccomp_refused(name)))
    return attacks


ATTACKS = [
    *_syscall_attacks(),
    Attack("clone3_enosys", "kernel", CLONE3, ("seccomp",), answers_enosys),
    Attack(
        "int80_i386_syscall",
        "kernel",
        INT80,
        ("seccomp", "seccomp:no_exec_memory"),
        other_abi_refused("int80"),
    ),
    Attack("x32_syscall", "kernel", X32, ("seccomp",), other_abi_refused("x32")),
    Attack("seccomp_refusal_flood", "kernel", REFUSAL_FLOOD, ("seccomp",), flood_counted),
    Attack(
        "default_deny_unlisted_syscalls",
        "kernel",
        DEFAULT_DENY,
        ("seccomp",),
        every_probe_refused_and_counted,
    ),
    Attack(
        "seccomp_own_listener_continue",
        "kernel",
        NOTIFY_STACKING,
        ("seccomp", "kernel"),
        own_listener_refused,
    ),
]
