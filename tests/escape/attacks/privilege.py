"""Privilege: become root, use setuid binaries, raise capabilities, write kernel knobs.

Writes to kernel knobs open the file for writing without truncating and
write nothing (or write back what was read): being allowed to open it is
already the escape, and the host is never changed.
"""

from __future__ import annotations

import errno
from typing import Any

from tests.escape.harness import (
    Attack,
    Check,
    Outcome,
    blocked,
    blocked_each,
    counted_by_seccomp,
    layer_of,
)

ID_LAYERS = ("privileges", "userns", "seccomp")
KNOB_LAYERS = ("landlock", "mountns", "privileges", "seccomp")
ID_OVERRIDES = {errno.EINVAL: "userns"}  # id 0 not mapped in the user namespace

SETUID_ROOT = r"""
attempt("setuid_root", lambda: os.setuid(0), syscall="setuid")
"""

SETGID_ROOT = r"""
attempt("setgid_root", lambda: os.setgid(0), syscall="setgid")
"""

SETGROUPS_ROOT = r"""
attempt("setgroups_root", lambda: os.setgroups([0]), syscall="setgroups")
"""

CAPSET_ALL = r"""
header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
data = (ctypes.c_uint32 * 6)(*([0xFFFFFFFF] * 6))
attempt("capset_all", lambda: raw_syscall(126, header, data))
"""

SETUID_BINARY = r"""
import subprocess

# Set-user-id root binaries of the host, each asked for something only root may
# do and that needs no input: the answer says whether it ran with privileges.
os.mkdir("mnt")
asks = {
    "passwd": (["-S", "root"], lambda done: done.returncode == 0),  # reads /etc/shadow
    "mount": (["-t", "tmpfs", "none", "mnt"], lambda done: done.returncode == 0),
    "umount": (["/proc"], lambda done: done.returncode == 0),
}
labels = []
for path in json.loads('@SETUID_BINARIES@'):
    name = os.path.basename(path)
    if name not in asks:
        continue
    arguments, rooted = asks[name]
    label = "setuid_" + name
    labels.append(label)
    reached(label)
    try:
        done = subprocess.run([path, *arguments], capture_output=True, stdin=subprocess.PIPE,
                              timeout=3)
    except OSError as exc:
        report(label, errno=exc.errno, path=path)
    except subprocess.TimeoutExpired:
        report(label, ran=True, escalated=False, timeout=True)
    else:
        report(label, ran=True, escalated=rooted(done), returncode=done.returncode,
               stderr=done.stderr[-200:].decode(errors="replace"))
report("tried", labels=labels)
"""


def setuid_binaries_powerless(outcome: Outcome) -> set[str]:
    """Each set-user-id binary the host has ran in the jail, and without privileges."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels, f"no set-user-id binary of the host was tried: {outcome.describe()}"
    for label in labels:
        record = outcome.result_of(label)
        # A binary that did not run proves nothing (the host has it: see host_setuid_binaries).
        assert record.get("ran"), f"{label} never ran, no evidence either way: {record}"
        assert not record["escalated"], f"NOT CONTAINED: {label} ran as root: {record}"
        assert record.get("timeout") or record.get("stderr"), f"{label} said nothing: {record}"
    return {"no_new_privs"}


OOM_SCORE_ADJ = r"""
def lower_oom_score():
    with open("/proc/self/oom_score_adj", "w") as handle:
        handle.write("-1000")
    value = open("/proc/self/oom_score_adj").read().strip()
    if value != "-1000":
        raise OSError(errno.EPERM, "not lowered: " + value)
    return value

import errno
attempt("oom_score_adj", lower_oom_score)
"""

PROC_SELF_ATTR = r"""
def write_attr():
    with open("/proc/self/attr/current", "w") as handle:
        handle.write("unconfined")
    return "written"

attempt("proc_self_attr", write_attr)
"""

PROC_SELF_UID_MAP = r"""
def write_uid_map():
    with open("/proc/self/uid_map", "w") as handle:
        handle.write("0 0 1")
    return "written"

attempt("proc_self_uid_map", write_uid_map)
"""

KERNEL_KNOBS = r"""
labels = []
for path in json.loads('@KERNEL_KNOBS@'):
    labels.append("knob:" + path)
    attempt(labels[-1], lambda: os.close(os.open(path, os.O_WRONLY)), path=path)
report("tried", labels=labels)
"""

PARENT_MEM_WRITE = r"""
attempt("parent_mem", lambda: os.close(os.open(f"/proc/{os.getppid() or 1}/mem", os.O_RDWR)))
"""

MKNOD_DEVICE = r"""
import stat
attempt("mknod", lambda: os.mknod("null", 0o666 | stat.S_IFCHR, os.makedev(1, 3)),
        syscall=["mknod", "mknodat"])
"""

RAW_BLOCK_DEVICES = r"""
labels = []
for path in json.loads('@BLOCK_DEVICES@'):
    labels.append("device:" + path)
    attempt(labels[-1], lambda: open(path, "rb").read(512), path=path)
report("tried", labels=labels)
"""


JAIL_INIT_TAKEOVER = r"""
# Whatever supervises the run from inside its namespaces (pid 1, which may answer
# seccomp notifications outside the filter) must not be open to the tool.
labels = []
if os.getpid() != 1:
    labels.append("init_mem")
    attempt("init_mem", lambda: os.close(os.open("/proc/1/mem", os.O_RDWR)))
    labels.append("init_fds")
    attempt("init_fds", lambda: os.listdir("/proc/1/fd"))
    for fd in range(0, 8):
        labels.append(f"init_fd_{fd}")
        attempt(labels[-1], lambda: os.close(os.open(f"/proc/1/fd/{fd}", os.O_RDONLY)))
report("tried", labels=labels)
"""


def init_untouchable(outcome: Outcome) -> set[str]:
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels is not None, outcome.describe()
    if not labels:
        return {"pidns"}  # the tool is pid 1 itself: nothing above it is visible
    return {
        layer_of(outcome, outcome.result_of(label), {errno.ENXIO: "kernel"}) for label in labels
    }


KILL_SUPERVISORS = r"""
import signal
import time
labels = []
for pid in {os.getppid(), 1} - {0, os.getpid()}:
    labels.append(f"kill_{pid}")
    attempt(labels[-1], lambda: os.kill(pid, signal.SIGKILL), syscall="kill")
report("tried", labels=labels)
time.sleep(0.3)  # had init died, the kernel would have ended this process by now
print("STILL_RUNNING", flush=True)
"""


def signal_layer(outcome: Outcome, record: dict[str, Any]) -> str:
    """A refused signal: EPERM not counted by seccomp is Landlock's signal scoping (ABI 6+)."""
    if record.get("errno") == errno.EPERM and not counted_by_seccomp(outcome, record):
        return "landlock"
    return layer_of(outcome, record)


def supervisors_survive(outcome: Outcome) -> set[str]:
    """Killing what is above the tool in its namespace must not hurt the run, the service or
    the next run: the kill was tried (init, pid 1, is always there to try), the run still
    ended with its status reported by init, and a follow-up run works."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels and "kill_1" in labels, f"init was never tried: {outcome.describe()}"
    layers = set()
    for label in labels:
        record = outcome.result_of(label)
        layers.add("pidns" if record.get("ok") else signal_layer(outcome, record))
    assert "STILL_RUNNING" in outcome.stdout, f"the run did not go on: {outcome.describe()}"
    assert outcome.body.get("tool_status") == "ok", f"init did not report: {outcome.describe()}"
    follow_up = outcome.sandbox.run('reached("after")\nreport("after", ok=True)')
    assert follow_up.result_of("after").get("ok"), follow_up.describe()
    return layers


INTERRUPT_INIT = r"""
import signal
import time
# Pid 1 of the run's namespace is a Python process: SIGINT has a handler there,
# so, unlike SIGKILL, the kernel delivers it even from inside the namespace.
labels = []
if os.getpid() != 1:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        labels.append(f"signal_init_{sig}")
        attempt(labels[-1], lambda: os.kill(1, sig), syscall="kill")
report("tried", labels=labels)
time.sleep(0.5)
print("STILL_RUNNING", flush=True)
"""


def init_interrupt_harmless(outcome: Outcome) -> set[str]:
    """Whatever signalling pid 1 does to this run, the service and the next run are fine."""
    labels = outcome.results().get("tried", {}).get("labels")
    assert labels is not None, outcome.describe()
    layers = set()
    for label in labels:
        record = outcome.result_of(label)
        # Delivered: pid 1 of the namespace shrugs it off, as the follow-up run shows.
        layers.add("pidns" if record.get("ok") else signal_layer(outcome, record))
    wall = outcome.sandbox.limits.wall_seconds
    assert outcome.result["duration_ms"] <= (wall + 2) * 1000, outcome.describe()
    follow_up = outcome.sandbox.run('reached("after")\nreport("after", ok=True)')
    assert follow_up.result_of("after").get("ok"), follow_up.describe()
    return layers or {"pidns"}


DEV_INVENTORY = r"""
# Every device name the host has, looked up one by one (listing /dev may be refused,
# which would prove nothing): only the jail's own five exist, and those work.
allowed = {"null", "zero", "full", "random", "urandom"}
reached("dev_inventory")
present, opened = [], []
for name in json.loads('@HOST_DEVICES@'):
    path = "/dev/" + name
    if not os.path.lexists(path):
        continue
    present.append(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        opened.append(name)
    except OSError:
        pass
with open("/dev/null", "wb") as sink, open("/dev/zero", "rb") as zeros:
    working = sink.write(b"x") == 1 and zeros.read(4) == bytes(4)
report("dev_inventory", present=sorted(present), opened=sorted(opened), working=working,
       looked_up=len(json.loads('@HOST_DEVICES@')))
"""


def devices_minimal(outcome: Outcome) -> str:
    record = outcome.result_of("dev_inventory")
    allowed = {"null", "zero", "full", "random", "urandom"}
    assert record["looked_up"] > len(allowed), f"the host's /dev was not looked at: {record}"
    assert record["working"], f"the jail's own devices do not work: {record}"
    assert set(record["present"]) == allowed, (
        f"NOT CONTAINED: devices present in the jail: {sorted(set(record['present']) - allowed)}"
        f" (the jail's own missing: {sorted(allowed - set(record['present']))})"
    )
    assert set(record["opened"]) == allowed, record
    return "mountns"


REALTIME_PRIORITY = r"""
labels = ["sched_fifo", "sched_rr", "nice_minus_20"]
attempt("sched_fifo", lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)))
attempt("sched_rr", lambda: os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)))
attempt("nice_minus_20", lambda: os.setpriority(os.PRIO_PROCESS, 0, -20))
report("tried", labels=labels)
"""


def knobs_refused(key: str) -> Check:
    """Check: every knob was refused (EINVAL on a knob means the kernel rejected it)."""
    return blocked_each(key, overrides={errno.EINVAL: "kernel"})


ATTACKS = [
    Attack(
        "setuid_root", "privilege", SETUID_ROOT, ID_LAYERS, blocked("setuid_root", ID_OVERRIDES)
    ),
    Attack(
        "setgid_root", "privilege", SETGID_ROOT, ID_LAYERS, blocked("setgid_root", ID_OVERRIDES)
    ),
    Attack(
        "setgroups_root",
        "privilege",
        SETGROUPS_ROOT,
        ID_LAYERS,
        blocked("setgroups_root", ID_OVERRIDES),
    ),
    Attack("capset_all", "privilege", CAPSET_ALL, ID_LAYERS, blocked("capset_all")),
    Attack(
        "setuid_binaries",
        "privilege",
        SETUID_BINARY,
        ("no_new_privs",),
        setuid_binaries_powerless,
    ),
    Attack(
        "lower_oom_score_adj",
        "privilege",
        OOM_SCORE_ADJ,
        KNOB_LAYERS,
        blocked("oom_score_adj"),
    ),
    Attack(
        "write_proc_self_attr",
        "privilege",
        PROC_SELF_ATTR,
        (*KNOB_LAYERS, "kernel"),
        blocked("proc_self_attr", {errno.EINVAL: "kernel"}),
    ),
    Attack(
        "write_proc_self_uid_map",
        "privilege",
        PROC_SELF_UID_MAP,
        KNOB_LAYERS,
        blocked("proc_self_uid_map"),
    ),
    Attack(
        "open_kernel_knobs_for_write",
        "privilege",
        KERNEL_KNOBS,
        (*KNOB_LAYERS, "kernel"),
        knobs_refused("tried"),
    ),
    Attack(
        "write_parent_memory",
        "privilege",
        PARENT_MEM_WRITE,
        (*KNOB_LAYERS, "pidns"),
        blocked("parent_mem"),
    ),
    Attack(
        "jail_init_takeover",
        "privilege",
        JAIL_INIT_TAKEOVER,
        ("pidns", "landlock", "privileges", "kernel", "mountns"),
        init_untouchable,
    ),
    Attack(
        "kill_supervisors",
        "privilege",
        KILL_SUPERVISORS,
        ("seccomp", "pidns", "landlock", "privileges"),
        supervisors_survive,
    ),
    Attack(
        "signal_jail_init",
        "privilege",
        INTERRUPT_INIT,
        ("seccomp", "pidns", "privileges", "landlock"),
        init_interrupt_harmless,
    ),
    Attack("device_inventory", "privilege", DEV_INVENTORY, ("mountns",), devices_minimal),
    Attack(
        "realtime_priority",
        "privilege",
        REALTIME_PRIORITY,
        ("privileges", "seccomp"),
        blocked_each("tried", overrides={errno.EACCES: "privileges"}),
    ),
    Attack(
        "mknod_char_device",
        "privilege",
        MKNOD_DEVICE,
        ("privileges", "landlock", "seccomp"),
        blocked("mknod"),
    ),
    Attack(
        "read_raw_block_devices",
        "privilege",
        RAW_BLOCK_DEVICES,
        ("mountns", "landlock"),
        blocked_each("tried"),
    ),
]
