"""A slot's cgroup, service side: limits and limit-hit counters across successive runs.

The counters are read from files held open between runs: each run must
see what happened in it, not what the first read saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sandbox.host.cgroup_service import RunCgroup, discover_bases, owner_groups

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made by a root service")


@pytest.fixture
def group() -> Iterator[RunCgroup]:
    bases = owner_groups(discover_bases())
    cgroup = RunCgroup(bases, f"test-{os.getpid()}")
    cgroup.create()
    try:
        yield cgroup
    finally:
        cgroup.remove()
        for directory in bases.values():
            directory.rmdir()


def run_in(group: RunCgroup, code: str) -> int:
    """Run `code` in a Python moved into `group` before it starts; its exit status."""
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import sys; sys.stdin.read(1)\n" + code],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    group.add(child.pid)
    assert child.stdin is not None
    child.stdin.write(b"g")
    child.stdin.close()
    return child.wait(timeout=30)


ALLOCATE = "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 22))\n"
FORK = (
    "import os, time\n"
    "for _ in range(20):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(0.5)\n"
    "            os._exit(0)\n"
    "    except OSError:\n"
    "        break\n"
)


def test_memory_limit_hits_are_seen_run_after_run(group: RunCgroup) -> None:
    for _ in range(2):  # the second time through, the files are already open
        group.prepare_run(memory_bytes=64 << 20, processes=8)
        assert run_in(group, ALLOCATE) != 0
        assert group.memory_limit_hit()
        group.kill_all()
        group.reset_counters()
        group.prepare_run(memory_bytes=64 << 20, processes=8)
        assert run_in(group, "print('small')") == 0
        assert not group.memory_limit_hit()
        group.reset_counters()


def test_pids_limit_hits_are_seen_run_after_run(group: RunCgroup) -> None:
    for _ in range(2):
        group.prepare_run(memory_bytes=256 << 20, processes=3)
        run_in(group, FORK)
        assert group.pids_limit_hit()
        group.kill_all()
        group.reset_counters()
        group.prepare_run(memory_bytes=256 << 20, processes=3)
        assert run_in(group, "print('one process')") == 0
        assert not group.pids_limit_hit()
        group.kill_all()
        group.reset_counters()


def test_cgroup_v2_files_give_the_verdicts_and_the_cpu_time(tmp_path) -> None:
    """Read as a v2 group shows them: OOM kills (not `max` events), CPU time, what is held."""
    group = tmp_path / "slot"
    group.mkdir()
    files = {
        "pids.events": "max 0\n",
        "memory.events": "low 0\nhigh 0\nmax 57\noom 0\noom_kill 0\noom_group_kill 0\n",
        "memory.current": str(300 << 20),
        "memory.stat": f"anon {20 << 20}\nfile {280 << 20}\nfile_mapped {8 << 20}\n",
        "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    }
    for name, text in files.items():
        (group / name).write_text(text)
    cgroup = RunCgroup({}, "", dirs={"v2": group})
    cgroup.reset_counters()
    assert not cgroup.memory_limit_hit()  # reclaim at the limit ("max") is no verdict
    assert cgroup.cpu_seconds() == 1.5
    # 300 MiB charged, 280 MiB of it file pages (8 MiB mapped: reclaimable too): 20 MiB held.
    assert cgroup._resident_bytes() == 20 << 20
    (group / "memory.events").write_text(files["memory.events"].replace("oom_kill 0", "oom_kill 1"))
    assert cgroup.memory_limit_hit()
