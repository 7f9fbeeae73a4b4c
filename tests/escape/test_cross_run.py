"""Nothing of one run is visible to the next, nor to a run in flight beside it.

This matters most on the warm path, where every run is forked from the same
pre-started interpreter: a run that poisons modules, the environment or the
file system must not reach the next one.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.escape.harness import SandboxUnderTest, new_marker

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
