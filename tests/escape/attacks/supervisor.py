"""The run's supervision: reach init (pid 1, which times and reports the run), the process
groups it shares, the service's clock, the refusal count.

Init is the one process in a run's pid namespace the tool did not create,
and it shares the tool's uid (in unprivileged mode, the kernel uid of the
service too): uid-based checks cannot keep the tool from it. Whatever the
tool tries here, its run must end on time and be reported as what it was.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tests.escape.harness import (
    Attack,
    Outcome,
    counted_by_seccomp,
    descendants,
    layer_of,
    syscalls_of,
)

REACH_INIT = r"""
import resource
import signal
import struct
labels = []


def tried(label, action, syscall=None):
    labels.append(label)
    attempt(label, action, syscall=syscall)


assert os.getpid() != 1, "the tool is init itself: nothing to reach"
# Change how init is scheduled or limited (the kernel allows it for the same uid).
tried("nice_init", lambda: os.setpriority(os.PRIO_PROCESS, 1, 19), "setpriority")
tried("nice_init_group", lambda: os.setpriority(os.PRIO_PGRP, 1, 19), "setpriority")
tried("nice_own_group", lambda: os.setpriority(os.PRIO_PGRP, 0, 19), "setpriority")
tried("nice_every_process_of_the_uid", lambda: os.setpriority(os.PRIO_USER, 0, 19), "setpriority")
tried("nice_jail_uid", lambda: os.setpriority(os.PRIO_USER, os.getuid(), 19), "setpriority")
tried("read_init_nice", lambda: os.getpriority(os.PRIO_PROCESS, 1), "getpriority")
tried("init_cpu_limit", lambda: resource.prlimit(1, resource.RLIMIT_CPU, (1, 1)), "prlimit64")
tried("init_memory_limit", lambda: resource.prlimit(1, resource.RLIMIT_AS, (1 << 20, 1 << 20)),
      "prlimit64")
tried("init_fd_limit", lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3)), "prlimit64")
tried("init_affinity", lambda: os.sched_setaffinity(1, {0}), "sched_setaffinity")
tried("init_idle_class", lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0)),
      "sched_setscheduler")
tried("init_sched_param", lambda: os.sched_setparam(1, os.sched_param(0)), "sched_setparam")
# Signals and handles.
tried("stop_init", lambda: os.kill(1, signal.SIGSTOP), "kill")
tried("tgkill_init", lambda: raw_syscall(234, 1, 1, signal.SIGSTOP))
tried("sigqueue_init", lambda: raw_syscall(129, 1, signal.SIGUSR1, c_buffer(128)))
tried("pidfd_of_init", lambda: os.pidfd_open(1), "pidfd_open")
# The kernel reads a pid as 32 bits: junk above them still names init.
limit = struct.pack("QQ", 1, 1)
tried("init_cpu_limit_high_bits", lambda: raw_syscall(302, (1 << 32) | 1, 0, limit, None))
tried("nice_init_high_bits", lambda: raw_syscall(141, 0, (1 << 32) | 1, 19))
tried("init_affinity_high_bits", lambda: raw_syscall(203, (1 << 32) | 1, 8, c_buffer(8)))
report("tried", labels=labels)
print("STILL_SUPERVISED", flush=True)
"""


def init_out_of_reach(outcome: Outcome) -> set[str]:
    """Every attempt on init refused and counted by name; the run ended as any other would."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels, f"the program never said what it tried: {outcome.describe()}"
    layers = set()
    for label in labels:
        record = outcome.result_of(label)
        layer = layer_of(outcome, record)
        assert layer == "seccomp", (
            f"{label}: {record} not refused by seccomp (counted: {syscalls_of(record)} in"
            f" {outcome.denials}); {outcome.describe()}"
        )
        layers.add(layer)
    assert "STILL_SUPERVISED" in outcome.stdout, outcome.describe()
    assert outcome.body.get("tool_status") == "ok", outcome.describe()
    return layers


RENICE_EVERYTHING = r"""
import errno
labels = []
# Every process group and pid the tool can name, and the uids of the service and the
# jail: whatever is not the tool's own must be out of reach (refused, or no such thing).
for kind, name, ids in (
    (os.PRIO_PGRP, "group", range(0, 200)),
    (os.PRIO_PROCESS, "pid", range(1, 200)),
    (os.PRIO_USER, "uid", (0, 65534, 10001, os.getuid())),
):
    for number in ids:
        label = f"renice_{name}_{number}"
        try:
            os.setpriority(kind, number, 19)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                labels.append(label)
                report(label, errno=exc.errno, syscall="setpriority")
            continue
        labels.append(label)
        report(label, ok=True, own=number in (os.getpid(), os.getpgrp()) and kind != os.PRIO_USER)
reached("renice_everything")
report("tried", labels=labels)
"""


def nothing_outside_reniced(outcome: Outcome) -> str:
    """Only the tool's own processes changed; every process the service runs is at nice 0."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels, outcome.describe()
    for label in labels:
        record = outcome.results()[label]
        if record.get("ok"):
            assert record.get("own"), f"NOT CONTAINED: {label} reniced something: {record}"
        else:
            assert record.get("errno") in (errno.EPERM, errno.EACCES), record
    own = outcome.namespaces["pid"]  # the tool's own processes, if any are still going
    reniced = {
        pid: nice
        for pid in descendants(outcome.sandbox.service_pid)
        if (nice := _nice_of(pid)) not in (None, 0) and _pid_namespace(pid) != own
    }
    assert not reniced, f"NOT CONTAINED: processes of the service reniced: {reniced}"
    return "seccomp"


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _nice_of(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[16])  # field 19 of proc(5)


STARVE_SUPERVISOR = r"""
import time
# Every process the run may have, spinning at the lowest priority class there is
# for init to compete with: the run must still end at its limits, on time.
spinners = []
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass
        while True:
            pass
    spinners.append(pid)
reached("starve_supervisor")
report("starve_supervisor", spinners=len(spinners))
while True:
    pass
"""


def ended_on_time(outcome: Outcome) -> str:
    """Stopped at a limit of the run (CPU or wall), within the documented grace."""
    record = outcome.result_of("starve_supervisor")
    assert record.get("spinners", 0) >= 4, record
    limit = outcome.result.get("limit_hit")
    assert limit in ("cpu_time", "wall_time"), f"not stopped by a limit: {outcome.describe()}"
    wall = outcome.sandbox.limits.wall_seconds
    # The service's own clock ends it half a second after the wall limit at the latest;
    # the rest is the teardown of a dozen spinning processes on a busy machine.
    assert outcome.result["duration_ms"] <= (wall + 2) * 1000, outcome.describe()
    return "cgroup" if limit == "cpu_time" else "wall_time"


STACK_OWN_FILTER = r"""
import struct

# A filter of the tool's own in front of the jail's: its ERRNO outranks the jail's
# notification, so the calls it answers would never be counted.
KEYCTL = 250
program = b"".join([
    struct.pack("HBBI", 0x20, 0, 0, 0),              # ld [nr]
    struct.pack("HBBI", 0x15, 0, 1, KEYCTL),         # jeq keyctl
    struct.pack("HBBI", 0x06, 0, 0, 0x00050001),     # ret ERRNO(EPERM)
    struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000),     # ret ALLOW
])
code = ctypes.create_string_buffer(program)
fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", 4, ctypes.addressof(code)))
labels = ["stack_by_prctl", "stack_by_seccomp", "stack_by_seccomp_tsync", "strict_mode"]
attempt("stack_by_prctl", lambda: raw_syscall(157, 22, 2, fprog, 0, 0))
attempt("stack_by_seccomp", lambda: raw_syscall(317, 1, 0, fprog))
attempt("stack_by_seccomp_tsync", lambda: raw_syscall(317, 1, 1, fprog))
attempt_in_child("strict_mode", lambda: raw_syscall(157, 22, 1, 0, 0, 0))
refused_keyctl = 0
for _ in range(5):
    try:
        raw_syscall(KEYCTL, 0, -3, 0)
    except OSError:
        refused_keyctl += 1
reached("refused_after")
report("refused_after", keyctl=refused_keyctl)
report("tried", labels=labels)
"""


def stacking_refused_and_counted(outcome: Outcome) -> str:
    """No filter of the tool's own; every refusal after that still counted by name."""
    for label in outcome.results()["tried"]["labels"]:
        record = outcome.result_of(label)
        assert layer_of(outcome, record) == "seccomp" and counted_by_seccomp(outcome, record), (
            f"{label}: the tool stacked a filter of its own: {record}; {outcome.describe()}"
        )
    assert outcome.result_of("refused_after")["keyctl"] == 5
    counted = outcome.denied_beyond_baseline("keyctl")
    assert counted >= 5, f"refusals hidden: keyctl counted {counted} of 5: {outcome.denials}"
    return "seccomp"


NOTIFICATIONS = r"""
import fcntl
labels = []


def tried(label, action, syscall=None):
    labels.append(label)
    attempt(label, action, syscall=syscall)


# Watching what other runs (or the host) do with a file both can open.
tried("inotify_init", lambda: raw_syscall(253))
tried("inotify_init1", lambda: raw_syscall(294, 0))
tried("inotify_add_watch", lambda: raw_syscall(254, -1, b"/dev/null", 0xFFF))
tried("fanotify_init", lambda: raw_syscall(300, 0, 0))
directory = os.open("/usr", os.O_RDONLY)
tried("dnotify_dir", lambda: fcntl.fcntl(directory, fcntl.F_NOTIFY, fcntl.DN_ACCESS), "fcntl")
own = os.open("lease.txt", os.O_RDWR | os.O_CREAT)
tried("lease_own_file", lambda: fcntl.fcntl(own, fcntl.F_SETLEASE, fcntl.F_RDLCK), "fcntl")
tried("notify_high_bits", lambda: raw_syscall(72, directory, (1 << 32) | 1026, 1))
report("tried", labels=labels)
"""


def every_notification_refused(outcome: Outcome) -> str:
    labels = outcome.results()["tried"]["labels"]
    for label in labels:
        record = outcome.result_of(label)
        layer = layer_of(outcome, record, {errno.EINVAL: "kernel"})
        assert layer == "seccomp", f"{label}: not refused by seccomp: {record}; {outcome.denials}"
    return "seccomp"


ATTACKS = [
    Attack("reach_init", "supervisor", REACH_INIT, ("seccomp",), init_out_of_reach),
    Attack(
        "renice_outside_the_run",
        "supervisor",
        RENICE_EVERYTHING,
        ("seccomp",),
        nothing_outside_reniced,
    ),
    Attack(
        "starve_the_supervisor",
        "supervisor",
        STARVE_SUPERVISOR,
        ("cgroup", "wall_time"),
        ended_on_time,
    ),
    Attack(
        "stack_a_filter_to_hide_refusals",
        "supervisor",
        STACK_OWN_FILTER,
        ("seccomp",),
        stacking_refused_and_counted,
    ),
    Attack(
        "watch_shared_files",
        "supervisor",
        NOTIFICATIONS,
        ("seccomp",),
        every_notification_refused,
    ),
]
