"""The layers are really there: as /health reports them, and as the tool sees itself."""

from __future__ import annotations

import inspect
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox.host.cgroup_service import pid_alive
from sandbox.jail.layer import LAYERS
from testing.processes import wait_for_process_named
from tests.escape.harness import (
    SandboxUnderTest,
    assert_layers_active,
    assert_limits_bound_the_whole_run,
    new_marker,
)

DEVICE_NAMES = ("full", "null", "random", "urandom", "zero")

pytestmark = pytest.mark.escape

OPTIONAL_LAYERS = {"cgroup"}
"""Layers a host may lack without the suite failing: the cgroup layer needs a writable
hierarchy, which the suite gives the service (root, or a delegated subtree for the
unprivileged one) wherever the host has one; where it has none, its test is skipped
with the reason. Every other layer must be active."""


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
    assert_layers_active(_isolation(sandbox), set(LAYERS) - OPTIONAL_LAYERS)


def test_health_reports_the_cgroup_layer_active_where_the_suite_gives_one(
    sandbox: SandboxUnderTest,
) -> None:
    """The suite gives each service a cgroup it may write; the layer must then be active,
    and every limit bound the whole run."""
    if not sandbox.cgroup_delegated:
        pytest.skip("this host has no writable cgroup hierarchy to give the service")
    assert_limits_bound_the_whole_run(_isolation(sandbox))


def test_health_reports_every_shared_host_inode_pinned(sandbox: SandboxUnderTest) -> None:
    """What a run can lock of the host's (the probe's host_inodes) is held shared by the
    service, and so is the one inode every anonymous file shares."""
    mountns = _isolation(sandbox)["mountns"]
    pins = mountns["lock_pins"]
    assert not pins["failed"], pins
    assert {"anon_inode", *mountns["host_inodes"]} <= set(pins["pinned"]), mountns
    # Root mode makes the jail's own device nodes; unprivileged mode cannot.
    expected = [] if sandbox.mode == "root" else [f"/dev/{name}" for name in DEVICE_NAMES]
    assert mountns["host_inodes"] == expected, mountns


def test_health_reports_how_the_jail_is_built(sandbox: SandboxUnderTest) -> None:
    """Root mode when the service runs as root; unprivileged mode when it runs as 10001."""
    launcher = _isolation(sandbox)["privileges"].get("launcher")
    expected = "root" if sandbox.mode == "root" else "unprivileged (uid 10001)"
    assert launcher == expected, _isolation(sandbox)["privileges"]


def test_health_reports_seccomp_filter_size_and_landlock_abi(sandbox: SandboxUnderTest) -> None:
    isolation = _isolation(sandbox)
    seccomp_size = _find_number(isolation["seccomp"], "size", "instructions", "allow", "syscalls")
    assert seccomp_size, f"no seccomp filter size in {isolation['seccomp']}"
    abi = _find_number(isolation["landlock"], "abi")
    assert abi and abi >= 1, f"no Landlock ABI in {isolation['landlock']}"


SELF_VIEW = (
    inspect.getsource(pid_alive)
    + r"""
import socket

def read_status():
    status = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status

def capabilities():
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    raw_syscall(125, header, data)  # capget
    return {"effective": data[0] | data[3] << 32, "permitted": data[1] | data[4] << 32}

def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return "errno %d" % exc.errno

def interfaces():
    try:
        lines = open("/proc/net/dev").readlines()[2:]
    except OSError as exc:
        return "errno %d" % exc.errno
    return [line.split(":")[0].strip() for line in lines]


def interface_index(name):
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


try:
    status = read_status()
except OSError as exc:
    status = {"errno": exc.errno}
reached("self_view")
report("self_view", uid=os.getuid(), gid=os.getgid(), caps=capabilities(),
       no_new_privs=LIBC.prctl(39, 0, 0, 0, 0), seccomp_mode=LIBC.prctl(21, 0, 0, 0, 0),
       status=status, proc=listing("/proc"), interfaces=interfaces(),
       hostname=socket.gethostname(),
       existing_pids=[pid for pid in range(2, 4096) if pid_alive(pid)],
       service_pid_exists=pid_alive(@SERVICE_PID@),
       interfaces_by_name={name: interface_index(name)
                           for name in json.loads('@HOST_INTERFACES@') + ["lo"]})
"""
)


@pytest.fixture(scope="module")
def self_view(sandbox: SandboxUnderTest) -> dict[str, Any]:
    """What the tool sees of itself, read from inside a run."""
    outcome = sandbox.run(SELF_VIEW)
    return outcome.result_of("self_view")


def test_tool_has_no_capabilities(self_view: dict[str, Any]) -> None:
    assert self_view["caps"] == {"effective": 0, "permitted": 0}, self_view


def test_tool_has_no_new_privs_and_a_seccomp_filter(self_view: dict[str, Any]) -> None:
    assert self_view["no_new_privs"] == 1, self_view
    assert self_view["seccomp_mode"] == 2, self_view  # SECCOMP_MODE_FILTER


def test_tool_sees_only_its_own_processes(
    sandbox: SandboxUnderTest, self_view: dict[str, Any]
) -> None:
    """Asked pid by pid (listing /proc is refused to the tool: no evidence there)."""
    existing = self_view["existing_pids"]
    assert existing == [2], f"pids the tool can name besides init: {existing}"
    assert self_view["service_pid_exists"] is False, self_view


def test_tool_has_no_network_interfaces(self_view: dict[str, Any]) -> None:
    """Each of the host's interfaces asked by name: only lo exists in the jail."""
    found = {name: index for name, index in self_view["interfaces_by_name"].items() if index}
    assert set(found) == {"lo"}, self_view["interfaces_by_name"]


def test_tool_has_its_own_hostname(self_view: dict[str, Any]) -> None:
    assert self_view["hostname"] != socket.gethostname(), self_view["hostname"]


HELD_RUN = r"""
import time
set_comm(MARKER)
reached("held")
time.sleep(2)
"""

NAMESPACES = ("user", "pid", "net", "mnt", "ipc", "uts")


def _host_view_of(marker: str, deadline_s: float = 4.0) -> dict[str, Any]:
    """The tool process as the host sees it: status fields and namespace links."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        pid, status = wait_for_process_named(marker, deadline - time.monotonic())
        try:
            links = {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in NAMESPACES}
            devices = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
            return {
                "pid": pid,
                "status": status,
                "ns": links,
                "net_devices": [line.split(":")[0].strip() for line in devices],
                "group": os.getpgid(pid),
                "session": os.getsid(pid),
            }
        except OSError:
            continue  # gone meanwhile: another process may take the name
    raise AssertionError(f"the held run {marker} never appeared on the host")


def test_host_view_of_a_running_tool(sandbox: SandboxUnderTest) -> None:
    """Seen from the host: unprivileged uid, no capabilities, filter on, every namespace new."""
    marker = new_marker()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(sandbox.run, HELD_RUN, marker)
        view = _host_view_of(marker)
        outcome = running.result()
    assert outcome.reached("held"), outcome.describe()
    status = view["status"]
    real, effective = (int(value) for value in status["Uid"].split()[:2])
    assert real != 0 and effective != 0, f"the tool runs as host root: {status['Uid']}"
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    assert status["NoNewPrivs"] == "1", status
    assert status["Seccomp"] == "2", status
    host_ns = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
    shared = [ns for ns in NAMESPACES if view["ns"][ns] == host_ns[ns]]
    assert not shared, f"the tool shares the host's {shared} namespace(s): {view['ns']}"
    # Its network namespace, read from the host: only lo, and down.
    assert view["net_devices"] == ["lo"], view["net_devices"]
    # Its process group and session: init's (pid 1 in the jail), never the service's.
    service = sandbox.service_pid
    assert view["group"] != os.getpgid(service) and view["session"] != os.getsid(service), view
