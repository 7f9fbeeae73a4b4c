"""How a run is supervised, timed, limited and reported, whatever became of its init.

The jail's init (pid 1 of the run) times the tool and reports its status;
the service keeps a clock of its own and reads the run's CPU and memory
from the slot's cgroup. These tests break the inside on purpose (init
killed or stopped from the host) and check what the service reports.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from sandbox.host import bpf
from sandbox.host import jail_config as jail_config_module
from sandbox.host.lock_pins import LockPins
from sandbox.host.runner import WALL_GRACE_SECONDS, Runner
from sandbox.models import tool_status_of
from sandbox.spec import RunLimits
from testing.processes import wait_for_process_named
from tests.unit.sandbox.jailed import PATHS, PYTHON, python

pytestmark = pytest.mark.asyncio(loop_scope="module")

NAMED = (
    "import ctypes, sys, time\n"
    "ctypes.CDLL(None).prctl(15, ctypes.c_char_p(sys.argv[1].encode()), 0, 0, 0)\n"
    "print('before', flush=True)\n"
    "sys.stderr.write('HTTP/1.1 200 OK: isolation restored\\n'); sys.stderr.flush()\n"
    "time.sleep(60)\n"
)
"""A tool that names itself (its comm) for the host to find, prints, then waits."""


def tool_and_init(marker: str, deadline_s: float = 10.0) -> tuple[int, int]:
    """Host pids of the tool whose comm is `marker`, and of its parent (the jail's init)."""
    pid, status = wait_for_process_named(marker, deadline_s)
    return pid, int(status["PPid"])


def named_run(path: str, limits: RunLimits) -> tuple[str, object]:
    marker = "sup" + uuid.uuid4().hex[:10]
    spec = python(NAMED, path, limits=limits)
    spec = spec.model_copy(update={"argv": (*spec.argv, marker)})
    return marker, spec


@pytest.mark.parametrize("path", PATHS)
async def test_a_dead_supervisor_is_reported_as_such_with_the_tools_output(
    runner: Runner, path: str
) -> None:
    marker, spec = named_run(path, RunLimits(wall_seconds=20))
    run = asyncio.ensure_future(runner.run(spec))  # type: ignore[arg-type]
    _, init = await asyncio.to_thread(tool_and_init, marker)
    os.kill(init, signal.SIGKILL)  # what a tool could do when it could reach its supervisor
    result = await run
    assert result.supervisor_died, result
    assert tool_status_of(result) == "supervisor_died"
    assert result.stdout == "before\n"  # what the tool wrote is kept
    assert "isolation restored" in result.stderr  # as the tool's output, not the service's
    assert result.limit_hit is None and result.signal == signal.SIGKILL


@pytest.mark.parametrize("path", PATHS)
async def test_the_service_ends_a_run_whose_supervisor_cannot_run(
    runner: Runner, path: str
) -> None:
    """Init stopped (the extreme of a starved one): the run still ends at its wall limit."""
    wall = 1.5
    marker, spec = named_run(path, RunLimits(wall_seconds=wall))
    started = time.monotonic()
    run = asyncio.ensure_future(runner.run(spec))  # type: ignore[arg-type]
    _, init = await asyncio.to_thread(tool_and_init, marker)
    os.kill(init, signal.SIGSTOP)
    try:
        result = await run
    finally:
        try:
            os.kill(init, signal.SIGCONT)
        except ProcessLookupError:
            pass
    elapsed = time.monotonic() - started
    assert result.limit_hit == "wall_time", result
    assert tool_status_of(result) == "timeout"
    assert result.stdout == "before\n"
    # The whole run, jail set-up included, well within a second of the grace.
    assert elapsed < wall + WALL_GRACE_SECONDS + 1.0, elapsed


@pytest.mark.parametrize("path", PATHS)
async def test_cpu_seconds_bound_the_whole_run_not_each_process(runner: Runner, path: str) -> None:
    if not runner.isolation_report()["limit_scope"]["cpu_seconds"] == "run":
        pytest.skip("no cgroup CPU accounting here: cpu_seconds bounds each process only")
    # Each spinner alone stays under a per-process limit for a while; together
    # they pass the run's. The tool itself only waits for them.
    code = (
        "import os\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            pass\n"
        "ends = [os.wait()[1] for _ in range(4)]\n"
        "print('the spinners ended by themselves', ends)\n"
    )
    started = time.monotonic()
    result = await runner.run(python(code, path, limits=RunLimits(cpu_seconds=2, wall_seconds=30)))
    assert result.stdout == "", result
    assert result.limit_hit == "cpu_time", result
    assert result.signal == signal.SIGKILL
    # Four spinners on any number of CPUs: far sooner than 4 x 2 CPU seconds.
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("path", PATHS)
async def test_memory_verdicts_are_the_runs_own(runner: Runner, path: str) -> None:
    """Page cache of earlier runs and reclaim at the limit are not a memory limit hit."""
    if runner.isolation_report()["limit_scope"]["memory_bytes"] != "run":
        pytest.skip("no memory cgroup here")
    limits = RunLimits(memory_bytes=64 << 20)
    read_files = (
        "import os\n"
        "total = 0\n"
        "for top in ('/usr/lib', '/usr/share'):\n"
        "    for root, _, names in os.walk(top):\n"
        "        for name in names:\n"
        "            try:\n"
        "                with open(os.path.join(root, name), 'rb') as handle:\n"
        "                    total += len(handle.read(1 << 20))\n"
        "            except OSError:\n"
        "                pass\n"
        "        if total > 256 << 20:\n"
        "            break\n"
        "print(total > 64 << 20)\n"
    )
    for _ in range(2):
        reader = await runner.run(python(read_files, path, limits=limits))
        assert reader.stdout == "True\n" and reader.limit_hit is None, reader
    half = (
        "data = bytearray(32 << 20)\n"
        "for i in range(0, len(data), 4096):\n"
        "    data[i] = 1\n"
        "print('ok')\n"
    )
    for _ in range(3):
        benign = await runner.run(python(half, path, limits=limits))
        assert benign.stdout == "ok\n" and benign.limit_hit is None, benign
        assert tool_status_of(benign) == "ok"
    spread = (
        "import os, time\n"
        "for _ in range(6):\n"
        "    if os.fork() == 0:\n"
        "        data = bytearray(24 << 20)\n"
        "        for i in range(0, len(data), 4096):\n"
        "            data[i] = 1\n"
        "        time.sleep(5)\n"
        "        os._exit(0)\n"
        "os.wait()\n"
    )
    over = await runner.run(python(spread, path, limits=limits))
    assert over.limit_hit == "memory", over


@pytest.mark.parametrize("path", PATHS)
async def test_refusals_are_named_and_stacking_a_filter_is_refused(
    runner: Runner, path: str
) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "# A filter of the tool's own would answer its refused calls itself, uncounted.\n"
        "print(libc.prctl(22, 2, 0, 0, 0), ctypes.get_errno())\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        os.setuid(0)\n"
        "    except PermissionError:\n"
        "        pass\n"
    )
    result = await runner.run(python(code, path))
    assert result.stdout == "-1 1\n"  # EPERM
    assert result.seccomp_denials == {"prctl": 1, "setuid": 3}, result
    assert result.seccomp_refusals == 4


REACH_INIT = (
    "import os, resource\n"
    "os.setpriority(os.PRIO_PROCESS, 0, 5)  # its own priority: allowed\n"
    "calls = [\n"
    "    lambda: os.setpriority(os.PRIO_PROCESS, 1, 19),\n"
    "    lambda: os.setpriority(os.PRIO_PGRP, 0, 19),\n"
    "    lambda: os.setpriority(os.PRIO_USER, 0, 19),\n"
    "    lambda: resource.prlimit(1, resource.RLIMIT_CPU, (1, 1)),\n"
    "    lambda: os.sched_setaffinity(1, {0}),\n"
    "    lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0)),\n"
    "    lambda: os.kill(1, 9),\n"
    "]\n"
    "refused = 0\n"
    "for call in calls:\n"
    "    try:\n"
    "        call()\n"
    "    except PermissionError:\n"
    "        refused += 1\n"
    "print(refused, os.getpriority(os.PRIO_PROCESS, 0), os.getsid(0), os.getpgrp())\n"
)


async def test_a_run_cannot_reach_its_supervisor_or_other_runs_by_pid_or_group(
    runner: Runner,
) -> None:
    result = await runner.run(python(REACH_INIT, "warm"))
    assert result.stdout == "7 5 1 1\n", result  # in init's session, never the service's
    assert result.seccomp_refusals == 7
    own = os.getpgrp(), os.getsid(0)
    for slot in runner._slots:
        zygote = slot.zygote
        if zygote is not None and zygote.pid is not None:
            assert (os.getpgid(zygote.pid), os.getsid(zygote.pid)) != own
            assert os.getpriority(os.PRIO_PROCESS, zygote.pid) == 0


async def test_without_the_argument_rules_the_same_run_reaches_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above on a build whose filter lacks its argument rules: it must fail."""
    compile_whole = jail_config_module.compile_filter

    def without_argument_rules(
        network: bool, denied: frozenset[str], notify: bool, *rest: bool
    ) -> bytes:
        whole = compile_whole(network, denied, notify, *rest)
        refuse = bpf.ACT_NOTIFY if notify else bpf.ACT_ERRNO | errno.EPERM
        prefix = bpf.argument_refusals(refuse, denied)
        assert whole.startswith(prefix)
        return whole[len(prefix) :]

    monkeypatch.setattr(jail_config_module, "compile_filter", without_argument_rules)
    broken = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)
    await broken.start()
    try:
        result = await broken.run(python(REACH_INIT, "warm"))
    finally:
        await broken.close()
    assert result.stdout, result
    refused = int(result.stdout.split()[0])
    assert refused < 7 and result.seccomp_refusals < 7, result  # init was reached


LOCK_TARGETS = (
    "import fcntl, os, select, struct, sys\n"
    "FLOCK = struct.Struct('hhxxxxqqixxxx')\n"
    "keep = select.epoll()\n"
    "targets = {'eventfd': os.eventfd(0), 'epoll': keep.fileno(),\n"
    "           'ns': os.open('/proc/self/ns/cgroup', os.O_RDONLY)}\n"
    "for path in ('/dev/null', '/dev/zero', '/etc/ld.so.cache', sys.executable, '/usr'):\n"
    "    targets[path] = os.open(path, os.O_RDWR if path.startswith('/dev/') else os.O_RDONLY)\n"
)
HOLD_LOCKS = LOCK_TARGETS + (
    "READ = FLOCK.pack(fcntl.F_RDLCK, 0, 0, 0, 0)\n"
    "for fd in targets.values():\n"
    "    for lock in (lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),\n"
    "                 lambda: fcntl.fcntl(fd, fcntl.F_SETLK, READ),\n"
    "                 lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, READ)):\n"
    "        try:\n"
    "            lock()\n"
    "        except OSError:\n"
    "            pass\n"
    "print('holding', flush=True)\n"
    "import time; time.sleep(4)\n"
)
LOOK_AT_LOCKS = LOCK_TARGETS + (
    "seen = {}\n"
    "for name, fd in sorted(targets.items()):\n"
    "    answers = []\n"
    "    for ask in (lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),\n"
    "                lambda: FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK,\n"
    "                                     FLOCK.pack(fcntl.F_WRLCK, 0, 0, 0, 0))),\n"
    "                lambda: FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK,\n"
    "                                     FLOCK.pack(fcntl.F_WRLCK, 0, 0, 0, 0)))):\n"
    "        try:\n"
    "            answers.append(repr(ask()))\n"
    "        except OSError as error:\n"
    "            answers.append(error.errno)\n"
    "    seen[name] = answers\n"
    "print(seen)\n"
)


@pytest.mark.parametrize("path", PATHS)
async def test_no_lock_carries_anything_from_one_run_to_another(runner: Runner, path: str) -> None:
    """What a run sees of every lock it can take is the same with or without a run beside it."""
    alone = await runner.run(python(LOOK_AT_LOCKS, path))
    holder = asyncio.ensure_future(runner.run(python(HOLD_LOCKS, path)))
    await asyncio.sleep(1.5)  # the holder took its locks (its result says so)
    beside = await runner.run(python(LOOK_AT_LOCKS, path))
    held = await holder
    assert held.stdout == "holding\n", held
    assert alone.stdout and alone.stdout == beside.stdout, (alone.stdout, beside.stdout)


async def test_a_pinned_inode_takes_no_exclusive_lock() -> None:
    pins = LockPins()
    pins.pin_shared()
    try:
        assert "anon_inode" in pins.pinned, pins.failed
        probe = os.eventfd(0)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared ones are always granted
        os.close(probe)
    finally:
        pins.release()
    assert pins.pinned == []
