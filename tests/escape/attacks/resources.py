"""Resource exhaustion: hog the machine, or outlive the run."""

from __future__ import annotations

import ast
import signal

from tests.escape.harness import (
    Attack,
    Check,
    Outcome,
    layer_of,
    no_survivors,
    wait_no_survivors,
)

MIB = 1024 * 1024


def _no_survivors_after(outcome: Outcome) -> None:
    survivors = wait_no_survivors(outcome.marker)
    assert not survivors, f"NOT CONTAINED: processes outlived the run: {survivors}"


FORK_BOMB = r"""
import time
set_comm(MARKER)
children = []

def bomb():
    while len(children) < 5000:
        pid = os.fork()
        if pid == 0:
            set_comm(MARKER)
            time.sleep(60)
            os._exit(0)
        children.append(pid)

attempt("fork_bomb", bomb)
report("forked", count=len(children))
"""


def check_fork_bomb(outcome: Outcome) -> str:
    layer = layer_of(outcome, outcome.result_of("fork_bomb"))
    forked = outcome.results()["forked"]["count"]
    assert forked < outcome.sandbox.limits.processes, (
        f"forked {forked} children with a limit of {outcome.sandbox.limits.processes} processes"
    )
    _no_survivors_after(outcome)
    return layer


THREAD_BOMB = r"""
import threading
import time
threads = []

def bomb():
    while len(threads) < 5000:
        thread = threading.Thread(target=time.sleep, args=(60,), daemon=True)
        thread.start()
        threads.append(thread)

attempt("thread_bomb", bomb)
report("started", count=len(threads))
os._exit(0)
"""


def check_thread_bomb(outcome: Outcome) -> str:
    record = outcome.result_of("thread_bomb")
    started = outcome.results()["started"]["count"]
    assert started < outcome.sandbox.limits.processes, f"started {started} threads"
    if record.get("exception") == "RuntimeError":  # "can't start new thread": EAGAIN inside
        return "rlimit"
    return layer_of(outcome, record)


MEMORY_BOMB = r"""
chunks = []

def bomb():
    while len(chunks) < 4096:
        chunks.append(b"\x01" * (16 * 1024 * 1024))  # written, so really resident

attempt("memory_bomb", bomb)
report("allocated", mib=16 * len(chunks))
"""


def check_memory_bomb(outcome: Outcome) -> str:
    record = outcome.result_of("memory_bomb")
    limit_mib = outcome.sandbox.limits.memory_bytes // MIB
    if record.get("exception") == "MemoryError":
        allocated = outcome.results()["allocated"]["mib"]
        assert allocated <= limit_mib, f"allocated {allocated} MiB, limit {limit_mib} MiB"
        return "rlimit"
    if record.get("whole_run") and outcome.result.get("limit_hit") == "memory":
        return "cgroup"
    return layer_of(outcome, record)


SPREAD_MEMORY_BOMB = r"""
import select
import time
# RLIMIT_AS is per process: many processes, each under it, together far above it.
CHUNK = 16 * 1024 * 1024
per_child = max(1, (@MEMORY_LIMIT@ - 64 * 1024 * 1024) // CHUNK)
progress_r, progress_w = os.pipe()
children = []
chunks = {}

def spread():
    for index in range(12):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(progress_r)
                held = []
                for _ in range(per_child):
                    held.append(b"\x01" * CHUNK)
                    os.write(progress_w, bytes([index]))
                time.sleep(4)
            except BaseException:
                pass
            os._exit(0)
        children.append(pid)
    os.close(progress_w)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([progress_r], [], [], 0.2)
        if ready:
            for index in os.read(progress_r, 4096):
                chunks[index] = chunks.get(index, 0) + 1
    # Only the children still alive now hold their memory. One the kernel's
    # OOM killer has just picked may not have exited yet: give it a moment
    # (every child that finished allocating sleeps past it).
    time.sleep(0.5)
    alive = [i for i, pid in enumerate(children) if os.waitpid(pid, os.WNOHANG) == (0, 0)]
    return {"held_mib": 16 * sum(chunks.get(i, 0) for i in alive), "alive": len(alive),
            "allocated_mib": 16 * sum(chunks.values())}

attempt("spread_memory_bomb", spread)
"""


def check_spread_memory_bomb(outcome: Outcome) -> str:
    record = outcome.result_of("spread_memory_bomb")
    limit_mib = outcome.sandbox.limits.memory_bytes // MIB
    if record.get("whole_run") and outcome.result.get("limit_hit") == "memory":
        return "cgroup"
    if record.get("ok"):
        figures = ast.literal_eval(record["value"])
        assert figures["held_mib"] <= limit_mib, (
            f"NOT CONTAINED: the run's processes held {figures} MiB together, limit {limit_mib}"
        )
        return "cgroup" if outcome.result.get("limit_hit") == "memory" else "rlimit"
    return layer_of(outcome, record)


MMAP_BOMB = r"""
import mmap
size = @MEMORY_LIMIT@ * 4

def map_and_touch():
    area = mmap.mmap(-1, size)
    for offset in range(0, size, 4096):
        area[offset] = 1
    return size

attempt("mmap_bomb", map_and_touch)
"""


def check_mmap_bomb(outcome: Outcome) -> str:
    record = outcome.result_of("mmap_bomb")
    if record.get("whole_run") and outcome.result.get("limit_hit") == "memory":
        return "cgroup"
    return layer_of(outcome, record)


CPU_SPIN = r"""
reached("cpu_spin")
while True:
    pass
"""


def check_cpu_spin(outcome: Outcome) -> str:
    assert outcome.reached("cpu_spin"), outcome.describe()
    limit_hit = outcome.result.get("limit_hit")
    wall = outcome.sandbox.limits.wall_seconds
    assert outcome.result["duration_ms"] <= (wall + 2) * 1000, outcome.describe()
    if limit_hit == "cpu_time" or outcome.result.get("signal") == signal.SIGXCPU:
        return "rlimit"
    assert limit_hit == "wall_time", f"the spin was not stopped by a limit: {outcome.describe()}"
    return "wall_time"


SLEEP_FOREVER = r"""
import time
reached("sleep")
time.sleep(3600)
print("WOKE UP", flush=True)
"""


def check_sleep(outcome: Outcome) -> str:
    assert outcome.reached("sleep"), outcome.describe()
    assert "WOKE UP" not in outcome.stdout
    assert outcome.result.get("limit_hit") == "wall_time", outcome.describe()
    assert outcome.body.get("tool_status") == "timeout", outcome.describe()
    wall = outcome.sandbox.limits.wall_seconds
    assert outcome.result["duration_ms"] <= (wall + 2) * 1000, outcome.describe()
    return "wall_time"


DISK_FILL_ONE_FILE = r"""
written = 0

def fill():
    global written
    block = b"\0" * (1024 * 1024)
    with open("fill.bin", "wb", buffering=0) as handle:
        while written < (4 << 30):
            written += handle.write(block)

attempt("disk_fill_one_file", fill)
report("written", bytes=written)
"""


def check_disk_fill_one_file(outcome: Outcome) -> str:
    layer = layer_of(outcome, outcome.result_of("disk_fill_one_file"))
    written = outcome.results()["written"]["bytes"]
    assert written <= outcome.sandbox.limits.file_size_bytes, f"wrote {written} bytes"
    return layer


DISK_FILL_MANY_FILES = r"""
written = 0

def fill():
    # Each file stays under the per-file limit; only a quota on the whole
    # working dir (or memory accounting of a tmpfs) stops this. 1 GiB cap.
    global written
    block = b"\0" * (1024 * 1024)
    index = 0
    while written < (1 << 30):
        with open(f"part{index}.bin", "wb", buffering=0) as handle:
            for _ in range(8):
                written += handle.write(block)
        index += 1

attempt("disk_fill_many_files", fill)
report("written", bytes=written)
"""


def check_disk_fill_many_files(outcome: Outcome) -> str:
    record = outcome.result_of("disk_fill_many_files")
    if record.get("whole_run") and outcome.result.get("limit_hit") == "memory":
        return "cgroup"
    return layer_of(outcome, record)


TMP_FILL = r"""
written = 0

def fill():
    # The jail's private /tmp: bounded by its own size, whatever the per-file limit.
    global written
    block = b"\0" * (1024 * 1024)
    index = 0
    while written < (1 << 30):
        with open(f"/tmp/part{index}.bin", "wb", buffering=0) as handle:
            for _ in range(4):
                written += handle.write(block)
        index += 1

attempt("tmp_fill", fill)
report("written", bytes=written)
"""


def check_tmp_fill(outcome: Outcome) -> str:
    record = outcome.result_of("tmp_fill")
    if record.get("whole_run") and outcome.result.get("limit_hit") == "memory":
        return "cgroup"
    return layer_of(outcome, record)


HUGE_STDOUT = r"""
reached("huge_stdout")
chunk = "x" * 65536
for _ in range(160):  # 10 MiB
    sys.stdout.write(chunk)
sys.stdout.flush()
"""

HUGE_STDERR = r"""
reached("huge_stderr")
chunk = "y" * 65536
for _ in range(160):
    sys.stderr.write(chunk)
sys.stderr.flush()
"""


def check_output_cap(stream: str, label: str) -> Check:
    def check(outcome: Outcome) -> str:
        assert outcome.reached(label), outcome.describe()
        cap = outcome.sandbox.limits.output_bytes
        text = outcome.result[stream]
        assert len(text.encode()) <= cap, f"{stream} carried {len(text)} bytes, cap {cap}"
        assert outcome.result[f"{stream}_truncated"] is True, outcome.describe()
        return "output_cap"

    return check


FD_EXHAUSTION = r"""
fds = []

def exhaust():
    while len(fds) < 100000:
        fds.extend(os.pipe())

attempt("fd_exhaustion", exhaust)
report("opened", count=len(fds))
"""


def check_fd_exhaustion(outcome: Outcome) -> str:
    layer = layer_of(outcome, outcome.result_of("fd_exhaustion"))
    opened = outcome.results()["opened"]["count"]
    assert opened <= outcome.sandbox.limits.open_files, f"opened {opened} fds"
    return layer


RAISE_RLIMITS = r"""
import resource
names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
         "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_MEMLOCK", "RLIMIT_RTPRIO", "RLIMIT_NICE",
         "RLIMIT_MSGQUEUE", "RLIMIT_SIGPENDING", "RLIMIT_DATA", "RLIMIT_RSS"]
hard = {}
for name in names:
    number = getattr(resource, name)
    soft_before, hard_before = resource.getrlimit(number)
    try:
        resource.setrlimit(number, (hard_before, hard_before))  # always allowed
    except (OSError, ValueError):
        pass
    hard[name] = resource.getrlimit(number)[1]
# Raising a hard limit needs CAP_SYS_RESOURCE.
reached("raise_hard_limit")
try:
    current = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (current, current * 2 if current > 0 else -1))
    report("raise_hard_limit", ok=True, value=resource.getrlimit(resource.RLIMIT_AS))
except OSError as exc:
    report("raise_hard_limit", errno=exc.errno)
except ValueError as exc:
    report("raise_hard_limit", errno=1, error=str(exc))
report("hard_limits", **hard)
"""


def check_raise_rlimits(outcome: Outcome) -> str:
    """Check: soft limits raised to the hard ones still sit within the policy; core dumps off."""
    layer = layer_of(outcome, outcome.result_of("raise_hard_limit"))
    hard = outcome.results()["hard_limits"]
    limits = outcome.sandbox.limits
    unlimited = -1
    expected_ceilings = {
        "RLIMIT_AS": limits.memory_bytes,
        # SIGXCPU at the soft limit, SIGKILL one second later at the hard one.
        "RLIMIT_CPU": limits.cpu_seconds + 1,
        "RLIMIT_FSIZE": limits.file_size_bytes,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_NPROC": limits.processes,
        "RLIMIT_CORE": 0,
        "RLIMIT_RTPRIO": 0,
    }
    loose = {
        name: hard[name]
        for name, ceiling in expected_ceilings.items()
        if hard[name] == unlimited or hard[name] > ceiling
    }
    assert not loose, f"NOT CONTAINED: hard limits above the policy {expected_ceilings}: {loose}"
    return "rlimit" if layer == "privileges" else layer


SETSID_SURVIVOR = r"""
import time

def spawn():
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        set_comm(MARKER)
        os.write(ready_w, b"1")
        while True:
            time.sleep(1)
    os.read(ready_r, 1)
    return pid

attempt("setsid_survivor", spawn)
print("SURVIVOR_READY", flush=True)
"""

DOUBLE_FORK_DAEMON = r"""
import time

def daemonize():
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.chdir("/")
            os.umask(0)
            set_comm(MARKER)
            os.write(ready_w, b"1")
            for fd in (0, 1, 2):
                os.close(fd)  # a daemon lets go of the run's pipes
            while True:
                time.sleep(1)
        os._exit(0)
    os.read(ready_r, 1)
    os.wait()
    return "daemonized"

attempt("double_fork_daemon", daemonize)
print("SURVIVOR_READY", flush=True)
"""

STOPPED_CHILD = r"""
import signal
import time

def spawn_and_stop():
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        set_comm(MARKER)
        os.write(ready_w, b"1")
        os.close(1)
        os.close(2)
        while True:
            time.sleep(1)
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGSTOP)
    _, status = os.waitpid(pid, os.WUNTRACED)
    return os.WIFSTOPPED(status)

if attempt("stopped_child", spawn_and_stop):
    print("SURVIVOR_READY", flush=True)
"""

SIGNAL_IMMUNE_CHILD = r"""
import signal
import time

def spawn_immune():
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_IGN)
        os.setsid()
        set_comm(MARKER)
        os.write(ready_w, b"1")
        os.close(1)
        os.close(2)
        while True:
            time.sleep(1)
    os.read(ready_r, 1)
    return pid

attempt("signal_immune_child", spawn_immune)
print("SURVIVOR_READY", flush=True)
"""

ZOMBIE_FACTORY = r"""
import time

def make_zombies():
    for _ in range(8):
        if os.fork() == 0:
            os._exit(0)
    time.sleep(0.2)  # children are dead, never waited for
    return "zombies made"

attempt("zombie_factory", make_zombies)
print("SURVIVOR_READY", flush=True)
os._exit(0)
"""

ATTACKS = [
    Attack("fork_bomb", "resources", FORK_BOMB, ("rlimit", "cgroup"), check_fork_bomb),
    Attack("thread_bomb", "resources", THREAD_BOMB, ("rlimit", "cgroup"), check_thread_bomb),
    Attack("memory_bomb", "resources", MEMORY_BOMB, ("rlimit", "cgroup"), check_memory_bomb),
    Attack("mmap_bomb", "resources", MMAP_BOMB, ("rlimit", "cgroup"), check_mmap_bomb),
    Attack(
        "spread_memory_bomb",
        "resources",
        SPREAD_MEMORY_BOMB,
        ("cgroup", "rlimit"),
        check_spread_memory_bomb,
    ),
    Attack("cpu_spin", "resources", CPU_SPIN, ("rlimit", "wall_time"), check_cpu_spin),
    Attack("sleep_past_wall", "resources", SLEEP_FOREVER, ("wall_time",), check_sleep),
    Attack(
        "disk_fill_one_file",
        "resources",
        DISK_FILL_ONE_FILE,
        # A tool whose file size limit is its working dir's size (python-data: 64 MiB
        # each) meets the full tmpfs first; the check bounds what was written either way.
        ("rlimit", "disk_quota"),
        check_disk_fill_one_file,
    ),
    Attack(
        "disk_fill_many_files",
        "resources",
        DISK_FILL_MANY_FILES,
        ("disk_quota", "cgroup", "rlimit"),
        check_disk_fill_many_files,
    ),
    Attack("tmp_fill", "resources", TMP_FILL, ("disk_quota", "cgroup"), check_tmp_fill),
    Attack(
        "huge_stdout",
        "resources",
        HUGE_STDOUT,
        ("output_cap",),
        check_output_cap("stdout", "huge_stdout"),
    ),
    Attack(
        "huge_stderr",
        "resources",
        HUGE_STDERR,
        ("output_cap",),
        check_output_cap("stderr", "huge_stderr"),
    ),
    Attack("fd_exhaustion", "resources", FD_EXHAUSTION, ("rlimit",), check_fd_exhaustion),
    Attack("raise_rlimits", "resources", RAISE_RLIMITS, ("rlimit",), check_raise_rlimits),
    Attack(
        "setsid_survivor",
        "resources",
        SETSID_SURVIVOR,
        ("teardown",),
        no_survivors("setsid_survivor"),
    ),
    Attack(
        "double_fork_daemon",
        "resources",
        DOUBLE_FORK_DAEMON,
        ("teardown",),
        no_survivors("double_fork_daemon"),
    ),
    Attack(
        "stopped_child",
        "resources",
        STOPPED_CHILD,
        ("teardown",),
        no_survivors("stopped_child"),
    ),
    Attack(
        "signal_immune_child",
        "resources",
        SIGNAL_IMMUNE_CHILD,
        ("teardown",),
        no_survivors("signal_immune_child"),
    ),
    Attack(
        "zombie_factory",
        "resources",
        ZOMBIE_FACTORY,
        ("teardown",),
        no_survivors("zombie_factory"),
    ),
]
