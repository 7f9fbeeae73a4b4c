"""The layers are really there: as /health reports them, and as the tool sees itself."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.escape.harness import SandboxUnderTest

pytestmark = pytest.mark.escape

OPTIONAL_LAYERS = {"cgroup"}
"""Every other layer must be active on these machines."""


def _isolation(sandbox: SandboxUnderTest) -> dict[str, dict[str, Any]]:
    isolation = sandbox.health().get("isolation")
    assert isinstance(isolation, dict) and isolation, (
        f"/health has no isolation report: {isolation}"
    )
    return isolation


def _find_number(report: dict[str, Any], *words: str) -> int | None:
    """A positive integer field of ``report`` whose name contains one of ``words``."""
    for key, value in report.items():
        if any(word in key.lower() for word in words) and isinstance(value, int) and value > 0:
            return value
    return None


def test_health_reports_every_layer_active(sandbox: SandboxUnderTest) -> None:
    isolation = _isolation(sandbox)
    expected = {
        "userns", "pidns", "netns", "mountns", "ipcns", "utsns",
        "landlock", "seccomp", "rlimits", "no_new_privs", "privileges",
    }  # fmt: skip
    missing = expected - set(isolation)
    assert not missing, f"/health does not report {sorted(missing)}: {isolation}"
    inactive = {
        name: report
        for name, report in isolation.items()
        if name not in OPTIONAL_LAYERS and not (isinstance(report, dict) and report.get("active"))
    }
    assert not inactive, f"layers not active: {inactive}"


def test_health_reports_seccomp_filter_size_and_landlock_abi(sandbox: SandboxUnderTest) -> None:
    isolation = _isolation(sandbox)
    seccomp_size = _find_number(isolation["seccomp"], "size", "instructions", "allow", "syscalls")
    assert seccomp_size, f"no seccomp filter size in {isolation['seccomp']}"
    abi = _find_number(isolation["landlock"], "abi")
    assert abi and abi >= 1, f"no Landlock ABI in {isolation['landlock']}"


SELF_VIEW = r"""
import fcntl
import socket
import struct

status = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    status[key] = value.strip()
try:
    uid_map = open("/proc/self/uid_map").read().split()
except OSError as exc:
    uid_map = ["errno", exc.errno]
pids = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]]
try:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw = fcntl.ioctl(probe, 0x8913, struct.pack("16sH14s", b"lo", 0, b""))  # SIOCGIFFLAGS
    lo_up = bool(struct.unpack("16sH14s", raw)[1] & 1)
except OSError as exc:
    lo_up = "errno %d" % exc.errno
reached("self_view")
report("self_view", uid=os.getuid(), gid=os.getgid(), uid_map=uid_map,
       cap_eff=status["CapEff"], cap_prm=status["CapPrm"], cap_amb=status["CapAmb"],
       no_new_privs=status["NoNewPrivs"], seccomp=status["Seccomp"],
       pids=pids, interfaces=interfaces, lo_up=lo_up, hostname=socket.gethostname())
"""


@pytest.fixture(scope="module")
def self_view(sandbox: SandboxUnderTest) -> dict[str, Any]:
    """What the tool sees of itself, read from inside a run."""
    outcome = sandbox.run(SELF_VIEW)
    return outcome.result_of("self_view")


def test_tool_runs_unprivileged_in_the_parent_namespace(self_view: dict[str, Any]) -> None:
    uid_map = self_view["uid_map"]
    assert uid_map[:1] != ["errno"], f"uid_map unreadable: {uid_map}"
    rows = [uid_map[i : i + 3] for i in range(0, len(uid_map), 3)]
    outside = {int(row[1]) for row in rows}
    assert 0 not in outside, f"the tool's uid maps to root outside its namespace: {uid_map}"
    if rows == [["0", "0", "4294967295"]]:  # the initial namespace: no user namespace at all
        assert self_view["uid"] != 0


def test_tool_has_no_capabilities(self_view: dict[str, Any]) -> None:
    assert int(self_view["cap_eff"], 16) == 0, self_view
    assert int(self_view["cap_prm"], 16) == 0, self_view
    assert int(self_view["cap_amb"], 16) == 0, self_view


def test_tool_has_no_new_privs_and_a_seccomp_filter(self_view: dict[str, Any]) -> None:
    assert self_view["no_new_privs"] == "1", self_view
    assert self_view["seccomp"] == "2", self_view


def test_tool_sees_only_its_own_processes(
    sandbox: SandboxUnderTest, self_view: dict[str, Any]
) -> None:
    assert len(self_view["pids"]) <= 3, f"pids visible to the tool: {self_view['pids']}"
    assert sandbox.service_pid not in self_view["pids"]


def test_tool_has_no_network_interfaces(self_view: dict[str, Any]) -> None:
    assert set(self_view["interfaces"]) <= {"lo"}, self_view


def test_tool_has_its_own_hostname(self_view: dict[str, Any]) -> None:
    assert self_view["hostname"] != socket.gethostname(), self_view["hostname"]
