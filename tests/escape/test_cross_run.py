"""Nothing of one run is visible to the next, nor to a run in flight beside it.

This matters most on the warm path, where every run is forked from the same
pre-started interpreter: a run that poisons modules, the environment or the
file system must not reach the next one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox.policy import MAX_CONCURRENT_RUNS_CEILING
from tests.escape.harness import SandboxUnderTest, descendants, new_marker

SLOTS = MAX_CONCURRENT_RUNS_CEILING + 2
"""The service's run slots (see sandbox.app.default_runner)."""

pytestmark = pytest.mark.escape

POISON = r"""
import builtins
import json
import time
for path in ("/tmp/" + MARKER, "/dev/shm/" + MARKER, MARKER):
    try:
        with open(path, "w") as handle:
            handle.write("left by the previous run")
    except OSError:
        pass
os.environ["POISON_" + MARKER] = "1"
json.dumps = lambda *args, **kwargs: "poisoned"
setattr(builtins, "poison_" + MARKER, True)
sys.modules["poison_" + MARKER] = json
reached("poisoned")
"""

INSPECT = r"""
import builtins
import json
import time
previous = "@PREVIOUS@"
seen = []
for path in ("/tmp/" + previous, "/dev/shm/" + previous, previous):
    if os.path.exists(path):
        seen.append("file " + path)
if "POISON_" + previous in os.environ:
    seen.append("environment")
if json.dumps([1]) != "[1]":
    seen.append("patched json")
if hasattr(builtins, "poison_" + previous):
    seen.append("builtins")
if "poison_" + previous in sys.modules:
    seen.append("sys.modules")
reached("inspect")
report("inspect", seen=seen)
"""


def test_a_run_sees_nothing_of_the_previous_one(sandbox: SandboxUnderTest) -> None:
    poisoner = sandbox.run(POISON)
    assert poisoner.reached("poisoned"), poisoner.describe()
    inspector = sandbox.run(INSPECT.replace("@PREVIOUS@", poisoner.marker))
    seen = inspector.result_of("inspect")["seen"]
    assert not seen, f"NOT CONTAINED: the next run saw {seen}"


NEIGHBOUR = r"""
import socket
import time
set_comm(MARKER)
with open("/tmp/" + MARKER, "w") as handle:
    handle.write("neighbour")
with open(MARKER, "w") as handle:
    handle.write("neighbour")
key = int(MARKER[3:10], 16)
queue = LIBC.msgget(key, 0o1666)  # IPC_CREAT | 0666
segment = LIBC.shmget(key, 4096, 0o1666)
try:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0pagi-" + MARKER)
    server.listen(1)
    listening = True
except OSError:
    listening = False
reached("neighbour")
report("neighbour", queue=queue, segment=segment, listening=listening)
time.sleep(2.5)
"""

LOOK_FOR_NEIGHBOUR = r"""
import socket
import time
neighbour = "@NEIGHBOUR@"
seen = []
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline and not seen:
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for entry in entries:
        if entry.isdigit():
            try:
                if neighbour in open(f"/proc/{entry}/comm").read():
                    seen.append("process " + entry)
            except OSError:
                pass
    try:
        siblings = ["../" + name + "/" + neighbour for name in os.listdir("..")]
    except OSError:
        siblings = []
    for path in ["/tmp/" + neighbour, "../" + neighbour, *siblings]:
        if os.path.exists(path):
            seen.append("file " + path)
    key = int(neighbour[3:10], 16)
    if LIBC.msgget(key, 0) >= 0:
        seen.append("SysV message queue")
    if LIBC.shmget(key, 0, 0) >= 0:
        seen.append("SysV shared memory")
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect("\0pagi-" + neighbour)
        seen.append("abstract unix socket")
    except OSError:
        pass
    time.sleep(0.1)
reached("look")
report("look", seen=seen)
"""


def test_concurrent_runs_cannot_see_each_other(sandbox: SandboxUnderTest) -> None:
    neighbour_marker = new_marker()
    with ThreadPoolExecutor(2) as pool:
        neighbour = pool.submit(sandbox.run, NEIGHBOUR, neighbour_marker)
        looker = pool.submit(
            sandbox.run, LOOK_FOR_NEIGHBOUR.replace("@NEIGHBOUR@", neighbour_marker)
        )
        look = looker.result()
        created = neighbour.result().result_of("neighbour")
    seen = look.result_of("look")["seen"]
    assert not seen, f"NOT CONTAINED: a run saw its neighbour: {seen} (it made {created})"


SECRET_CARRIER = r"""
SECRET_PAYLOAD = MARKER + "-payload-of-the-previous-run"
reached("carrier")
"""

MEMORY_SCAN = r"""
import gc
# The needles travel reversed, so this program's own text does not contain them.
needles = [value[::-1] for value in json.loads('@REVERSED@')]
needle_ids = {id(needle) for needle in needles}
found = set()

def inspect(item):
    if isinstance(item, bytes):
        item = item.decode("latin-1")
    if isinstance(item, str) and id(item) not in needle_ids:
        for needle in needles:
            if needle in item:
                found.add(needle[:24])

def children(holder):
    if isinstance(holder, dict):
        return [item for pair in list(holder.items()) for item in pair]
    if isinstance(holder, (list, tuple, set, frozenset)):
        return list(holder)
    attributes = getattr(holder, "__dict__", None)
    if isinstance(attributes, dict):
        return list(attributes.values())
    slots = getattr(type(holder), "__slots__", ())
    return [getattr(holder, name, None) for name in ([slots] if isinstance(slots, str) else slots)]

# Everything reachable from live containers and from every frame above this one
# (whatever started the tool in this process: a launcher, a zygote).
roots = list(gc.get_objects())
frame = sys._getframe()
while frame is not None:
    roots.append(dict(frame.f_locals))
    frame = frame.f_back
seen_ids = set()
pending = [(root, 0) for root in roots]
while pending:
    holder, depth = pending.pop()
    if id(holder) in seen_ids or depth > 4:
        continue
    seen_ids.add(id(holder))
    for item in children(holder):
        if isinstance(item, (str, bytes)):
            inspect(item)
        elif item is not None and not isinstance(item, (int, float, bool, type)):
            pending.append((item, depth + 1))
reached("memory_scan")
report("memory_scan", found=sorted(found), holders=len(seen_ids))
"""


def test_a_run_holds_no_secrets_of_the_service_or_earlier_runs(
    sandbox: SandboxUnderTest,
) -> None:
    carrier = sandbox.run(SECRET_CARRIER)
    assert carrier.reached("carrier"), carrier.describe()
    jwt_header = sandbox.token().split(".")[0]
    needles = [
        carrier.marker + "-payload",
        jwt_header,
        "PRIVATE KEY",
        str(sandbox.keys_dir),
        "PAGI_KEYS_DIR",
        "RUST_SANDBOX_PORT",
    ]
    reversed_needles = json.dumps([needle[::-1] for needle in needles])
    scan = sandbox.run(MEMORY_SCAN.replace("@REVERSED@", reversed_needles))
    record = scan.result_of("memory_scan")
    assert record["holders"] > 100, record
    assert not record["found"], f"NOT CONTAINED: the run's memory holds {record['found']}"


RANDOM_STATE = r"""
import random
import tempfile
reached("random")
report("random", value=random.random(), temp_name=next(tempfile._get_candidate_names()))
"""


def test_runs_do_not_share_random_state(sandbox: SandboxUnderTest) -> None:
    """Forked runs must not replay the same pseudo-random stream (one run predicting the next)."""
    first = sandbox.run(RANDOM_STATE).result_of("random")
    second = sandbox.run(RANDOM_STATE).result_of("random")
    assert first["value"] != second["value"], "two runs drew the same random numbers"
    assert first["temp_name"] != second["temp_name"], "two runs got the same temp names"


LEAVE_SOCKET = r"""
import socket
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0pagi-" + MARKER)
server.listen(1)
if os.fork() == 0:
    os.setsid()
    import time
    time.sleep(30)  # would keep the socket alive if it survived the run
reached("left")
report("left", ok=True)
"""

FIND_SOCKET = r"""
import socket
previous = "@PREVIOUS@"
reached("find")
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\0pagi-" + previous)
    report("find", found=True)
except OSError as exc:
    report("find", found=False, errno=exc.errno)
"""


def test_an_abstract_socket_does_not_outlive_its_run(sandbox: SandboxUnderTest) -> None:
    """Runs on the same slot may share a network namespace: nothing bound in it may last."""
    for _ in range(9):  # more rounds than run slots (8), so some land on a shared slot
        leaver = sandbox.run(LEAVE_SOCKET)
        assert leaver.result_of("left").get("ok"), leaver.describe()
        finder = sandbox.run(FIND_SOCKET.replace("@PREVIOUS@", leaver.marker))
        record = finder.result_of("find")
        assert not record["found"], "NOT CONTAINED: a run reached a socket of the previous run"


def _state_entries(sandbox: SandboxUnderTest) -> set[str]:
    return {str(path) for path in sandbox.state_dir.rglob("*")}


def test_runs_leave_nothing_in_the_state_dir(sandbox: SandboxUnderTest) -> None:
    """Twenty runs that write files: afterwards the service's state dir holds what it held."""
    program = 'open("keep.bin", "wb").write(b"x" * 4096)\nos.mkdir("sub")\nreached("wrote")'
    sandbox.run(program)  # the first run may create the service's own bookkeeping
    time.sleep(0.5)
    before = _state_entries(sandbox)
    for _ in range(20):
        assert sandbox.run(program).reached("wrote")
    deadline = time.monotonic() + 3
    grown = _state_entries(sandbox) - before
    while grown and time.monotonic() < deadline:
        time.sleep(0.1)
        grown = _state_entries(sandbox) - before
    assert not grown, f"runs left behind in the state dir: {sorted(grown)[:10]}"


# --- channels through what runs share ------------------------------------------------

SHARED_TARGETS = r"""
import fcntl
import select
import struct
FLOCK = struct.Struct("hhxxxxqqixxxx")
keep = [select.epoll()]
openers = {
    "eventfd": lambda: os.eventfd(0),
    "epoll": lambda: keep[0].fileno(),
    "timerfd": lambda: LIBC.timerfd_create(1, 0),
    "cgroup_ns": lambda: os.open("/proc/self/ns/cgroup", os.O_RDONLY),
    "time_ns": lambda: os.open("/proc/self/ns/time", os.O_RDONLY),
}
for path in ("/dev/null", "/dev/zero", "/dev/urandom", "/etc/ld.so.cache", sys.executable,
             "/usr", "/usr/lib"):
    openers[path] = (lambda path=path: os.open(path, os.O_RDWR if path.startswith("/dev/")
                                               else os.O_RDONLY))
targets = {name: opener() for name, opener in openers.items()}
slot = os.stat("/").st_dev  # the root a slot's runs share (root mode), for the report
"""

HOLD_EVERYTHING = (
    SHARED_TARGETS
    + r"""
import time
READ, WRITE = FLOCK.pack(fcntl.F_RDLCK, 0, 0, 0, 0), FLOCK.pack(fcntl.F_WRLCK, 0, 0, 0, 0)
held = {}
for name, fd in targets.items():
    got = []
    for kind, lock in (("flock_ex", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                       ("posix_write", lambda: fcntl.fcntl(fd, fcntl.F_SETLK, WRITE)),
                       ("posix_read", lambda: fcntl.fcntl(fd, fcntl.F_SETLK, READ)),
                       ("ofd_read", lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, READ))):
        try:
            lock()
            got.append(kind)
        except OSError:
            pass
    held[name] = got
for path in ("/dev/null", "/etc/ld.so.cache", sys.executable, "/usr", "/"):
    try:
        os.utime(path, ns=(1, 1))
    except OSError:
        pass
reached("holding")
report("holding", held=held, slot=slot)
time.sleep(@HOLD_SECONDS@)
"""
)

LOOK_AT_EVERYTHING = (
    SHARED_TARGETS
    + r"""
WRITE = FLOCK.pack(fcntl.F_WRLCK, 0, 0, 0, 0)
seen = {}
for name, fd in sorted(targets.items()):
    answers = []
    for ask in (lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                lambda: fcntl.flock(fd, fcntl.LOCK_UN),
                lambda: FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, WRITE)),
                lambda: FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, WRITE))):
        try:
            answers.append(repr(ask()))
        except OSError as exc:
            answers.append(exc.errno)
    status = os.fstat(fd)
    seen[name] = answers + [status.st_mode, status.st_mtime_ns]
reached("look")
report("look", seen=seen, slot=slot)
"""
)


def _looks(sandbox: SandboxUnderTest, count: int) -> list[dict[str, object]]:
    """`count` looks at every shared thing, run at once."""
    with ThreadPoolExecutor(count) as pool:
        runs = [pool.submit(sandbox.run, LOOK_AT_EVERYTHING) for _ in range(count)]
        return [run.result().result_of("look") for run in runs]


def test_no_lock_or_mark_reaches_a_run_beside_or_after(sandbox: SandboxUnderTest) -> None:
    """Locks and marks on every inode runs share: runs beside the holder, and runs after it
    (on its slot and on others), see exactly what a run alone sees."""
    alone = _looks(sandbox, 1)[0]["seen"]
    holder_program = HOLD_EVERYTHING.replace("@HOLD_SECONDS@", "3")
    same_slot_after = 0
    for _ in range(2):
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(sandbox.run, holder_program)
            time.sleep(1.2)  # the holder has its locks (its own report says which)
            beside = _looks(sandbox, 2)
            held = holder.result().result_of("holding")
        assert any(held["held"].values()), f"the holder took no lock at all: {held}"
        for look in beside:
            assert look["seen"] == alone, _difference(alone, look["seen"], held)
        # Free slots are taken in turn: one after another, the runs after the holder
        # come to every slot, the holder's included.
        for _ in range(SLOTS + 1):
            look = _looks(sandbox, 1)[0]
            assert look["seen"] == alone, _difference(alone, look["seen"], held)
            if look["slot"] == held["slot"]:
                same_slot_after += 1
                break
    if sandbox.mode == "root":
        # A slot's runs share its root (its device id tells them apart): both cases tried.
        assert same_slot_after, "no run after the holder came to its slot"


def _difference(alone: object, seen: object, held: object) -> str:
    assert isinstance(alone, dict) and isinstance(seen, dict)
    changed = {
        name: (alone[name], seen.get(name)) for name in alone if alone[name] != seen.get(name)
    }
    return f"NOT CONTAINED: another run changed what a run sees: {changed} (holder: {held})"


HELD_STILL = r"""
import time
set_comm(MARKER)
print("SCAN_ME", flush=True)
time.sleep(3)
"""


def _zygote_pids(service_pid: int) -> list[int]:
    """The slots' zygotes and the jails they forked (which show the zygote's command line)."""
    found = []
    for pid in descendants(service_pid):
        try:
            if b"--zygote" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _memory_of(pid: int) -> Iterator[tuple[str, bytes]]:
    """Every readable mapping of a process, as the host (root) reads it: (mapping, bytes)."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            span, permissions, *_ = line.split()
            if "r" not in permissions:
                continue
            start, end = (int(value, 16) for value in span.split("-"))
            try:
                memory.seek(start)
                yield line, memory.read(end - start)
            except (OSError, OverflowError):
                continue  # [vvar] and the like


def _pid_of(marker: str, deadline_s: float = 5.0) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == marker:
                    return int(entry)
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"the run {marker} never appeared on the host")


@pytest.mark.skipif(os.geteuid() != 0, reason="reading a jailed process's memory needs root")
def test_a_runs_memory_holds_no_host_path_or_pid_freed_or_not(sandbox: SandboxUnderTest) -> None:
    """Every byte of the tool's process, read from the host while it runs (on the warm path
    the zygote's memory it inherited, freed parts included): no path of the service's state,
    of its keys, policy, cgroups or code, and no host pid of the service or its zygotes as
    /proc/self/stat shows one."""
    pids = [sandbox.service_pid, *_zygote_pids(sandbox.service_pid)]
    assert len(pids) > 1, "no zygote found under the service"
    needles = {
        "state dir": str(sandbox.state_dir.resolve()).encode(),
        "keys dir": str(sandbox.keys_dir).encode(),
        "policy": str(sandbox.policy_path).encode(),
        "cgroup path": b"/sys/fs/cgroup/",
        "PAGI's code": str(sandbox.repo / "sandbox").encode(),
        **{f"pid {pid}": b" %d " % pid for pid in pids},
    }
    for _ in range(2):
        marker = new_marker()
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(sandbox.run, HELD_STILL, marker)
            tool = _pid_of(marker)
            found = {
                name: mapping
                for mapping, data in _memory_of(tool)
                for name, needle in needles.items()
                if needle in data
            }
            outcome = running.result()
        assert "SCAN_ME" in outcome.stdout, outcome.describe()
        assert not found, f"NOT CONTAINED: the tool's memory holds {found}"


# --- verdicts that are the run's own --------------------------------------------------

READ_MANY_FILES = r"""
total = 0
for top in ("/usr/lib", "/usr/share"):
    for root, _, names in os.walk(top):
        for name in names:
            try:
                with open(os.path.join(root, name), "rb") as handle:
                    total += len(handle.read(1 << 20))
            except OSError:
                pass
        if total > 2 * @MEMORY_LIMIT@:
            break
reached("read_files")
report("read_files", read=total)
"""

HALF_THE_LIMIT = r"""
data = bytearray(@MEMORY_LIMIT@ // 2)
for index in range(0, len(data), 4096):
    data[index] = 1
reached("half")
report("half", ok=True)
"""


def test_memory_verdicts_are_each_runs_own(sandbox: SandboxUnderTest) -> None:
    """Runs that fill the page cache, beside and before runs that use half their memory:
    none of them is reported as having hit the memory limit."""
    if sandbox.tool != "python":
        pytest.skip("reads twice the memory limit from /usr: 2 GiB for python-data, past its wall")
    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            readers = [pool.submit(sandbox.run, READ_MANY_FILES) for _ in range(2)]
            halves = [pool.submit(sandbox.run, HALF_THE_LIMIT) for _ in range(2)]
            for future in readers:
                outcome = future.result()
                assert outcome.result_of("read_files")["read"] > sandbox.limits.memory_bytes
                assert outcome.body["tool_status"] == "ok", outcome.describe()
            for future in halves:
                outcome = future.result()
                assert outcome.result_of("half")["ok"], outcome.describe()
                assert outcome.body["tool_status"] == "ok", outcome.describe()
                assert outcome.result["limit_hit"] is None, outcome.describe()


SPINNERS = r"""
import time
# Processes that each stay under the CPU limit alone, and report the CPU they used.
reports_r, reports_w = os.pipe()
for _ in range(6):
    if os.fork() == 0:
        os.close(reports_r)
        deadline = time.process_time()
        while True:
            if time.process_time() >= deadline:
                os.write(reports_w, b"%d %.3f\n" % (os.getpid(), time.process_time()))
                deadline += 0.1
os.close(reports_w)
reached("spinners")
used = {}
with os.fdopen(reports_r) as reports:
    for line in reports:
        pid, seconds = line.split()
        used[pid] = float(seconds)
        print("USED %.3f" % sum(used.values()), flush=True)
"""


def test_cpu_seconds_bound_the_whole_run(sandbox: SandboxUnderTest) -> None:
    """Six processes spinning: together they stop at the run's CPU limit, not six times it."""
    health = sandbox.health()["isolation"]["limit_scope"]
    if health["cpu_seconds"] != "run":
        pytest.skip(f"no cgroup CPU accounting here (limit scope {health})")
    outcome = sandbox.run(SPINNERS)
    assert outcome.reached("spinners"), outcome.describe()
    used = max(float(line.split()[1]) for line in outcome.lines if line.startswith("USED "))
    limit = sandbox.limits.cpu_seconds
    # What the spinners said they used (up to 0.1 s each behind), and the service's
    # poll and kill (CPU_POLL_SECONDS per CPU): well below twice the limit, far
    # below six times.
    assert used <= limit + 1.0, f"NOT CONTAINED: the run used {used} CPU seconds, limit {limit}"
    assert outcome.result["limit_hit"] in ("cpu_time", "wall_time"), outcome.describe()
