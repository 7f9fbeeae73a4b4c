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

from sandbox.jail.cgroup_service import RunCgroup, discover_bases, owner_groups

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
