"""The suite's checks fail when what they look for is there: each one, shown on a broken case.

A check that cannot fail proves nothing. Here each mended check of the
escape suite meets what it must catch — a process left running in a run's
namespaces, an attack that never reported, a binary that never ran, a
device left in /dev, a refusal some other layer made, a cgroup layer
switched off — and must fail on it. No sandbox service is needed: the
cases are made on the host, or are the outcomes such a build would give.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.escape.attacks.privilege import (
    devices_minimal,
    setuid_binaries_powerless,
    supervisors_survive,
)
from tests.escape.harness import (
    Outcome,
    assert_layers_active,
    assert_limits_bound_the_whole_run,
    layer_of,
    run_survivors,
)

pytestmark = pytest.mark.escape


def outcome_of(lines: list[str], result: dict[str, Any] | None = None, **sandbox: Any) -> Outcome:
    """What a run of a (broken) build would have answered: its stdout lines and result."""
    body = {
        "tool_status": "ok",
        "result": {"stdout": "\n".join(lines) + "\n", "seccomp_denials": {}, **(result or {})},
    }
    under_test = SimpleNamespace(baseline_denials={}, baseline_refusals=0, **sandbox)
    return Outcome(200, body, "marker", under_test, {}, 0.1)  # type: ignore[arg-type]


def result_line(label: str, **fields: Any) -> str:
    return "RESULT " + json.dumps({"label": label, **fields})


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes' namespaces needs root")
def test_a_process_left_in_a_runs_namespaces_is_a_survivor_whatever_its_name() -> None:
    # A "run" on the host: its own user and pid namespaces, a process that stays.
    left = subprocess.Popen(
        ["unshare", "--user", "--pid", "--fork", "sleep", "30"], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        (survivor,) = [
            int(pid)
            for pid in Path(f"/proc/{left.pid}/task/{left.pid}/children").read_text().split()
        ]
        namespaces = {kind: os.readlink(f"/proc/{survivor}/ns/{kind}") for kind in ("pid", "user")}
        began = boottime()  # the program began after its init (here: sleep) was up
        line = "NAMESPACES " + json.dumps({**namespaces, "boottime": began})
        found = run_survivors(outcome_of([line]), grace_s=0.2)
        assert any(f"pid {survivor} " in entry for entry in found), found
        # The same ids, for a run that began before that process (the kernel reused
        # the ids of a namespace gone since): not that run's survivor.
        earlier = "NAMESPACES " + json.dumps({**namespaces, "boottime": began - 60})
        assert run_survivors(outcome_of([earlier]), grace_s=0.2) == []
    finally:
        left.kill()
        left.wait()


def test_a_run_that_never_said_its_namespaces_is_no_evidence_of_no_survivors() -> None:
    with pytest.raises(AssertionError, match="never said its namespaces"):
        run_survivors(outcome_of(["hello"]))


def test_killing_the_supervisors_without_a_report_or_with_a_dead_init_fails() -> None:
    silent = outcome_of(["NAMESPACES {}"])
    with pytest.raises(AssertionError, match="init was never tried"):
        supervisors_survive(silent)
    tried = [
        "REACHED kill_1",
        result_line("kill_1", errno=errno.EPERM, syscall="kill"),
        result_line("tried", labels=["kill_1"]),
    ]
    died = outcome_of(tried)  # no STILL_RUNNING: the run ended with its init
    with pytest.raises(AssertionError, match="did not go on"):
        supervisors_survive(died)


def test_a_setuid_binary_that_never_ran_or_ran_as_root_fails() -> None:
    never_ran = outcome_of(
        [
            "REACHED setuid_mount",
            result_line("setuid_mount", errno=errno.ENOENT, path="/usr/bin/mount"),
            result_line("tried", labels=["setuid_mount"]),
        ]
    )
    with pytest.raises(AssertionError, match="never ran"):
        setuid_binaries_powerless(never_ran)
    rooted = outcome_of(
        [
            "REACHED setuid_mount",
            result_line("setuid_mount", ran=True, escalated=True, stderr=""),
            result_line("tried", labels=["setuid_mount"]),
        ]
    )
    with pytest.raises(AssertionError, match="NOT CONTAINED"):
        setuid_binaries_powerless(rooted)
    with pytest.raises(AssertionError, match="no set-user-id binary"):
        setuid_binaries_powerless(outcome_of([result_line("tried", labels=[])]))


@pytest.mark.parametrize(
    ("record", "match"),
    [
        # /dev unreadable and nothing looked up: no evidence at all.
        ({"present": [], "opened": [], "working": True, "looked_up": 0}, "not looked at"),
        # A device of the host's left in the jail.
        (
            {
                "present": ["full", "null", "random", "sda", "urandom", "zero"],
                "opened": ["full", "null", "random", "urandom", "zero"],
                "working": True,
                "looked_up": 200,
            },
            "NOT CONTAINED",
        ),
        # The jail's own devices missing or broken.
        (
            {"present": ["null"], "opened": ["null"], "working": False, "looked_up": 200},
            "do not work",
        ),
    ],
)
def test_the_device_inventory_needs_evidence(record: dict[str, Any], match: str) -> None:
    outcome = outcome_of(["REACHED dev_inventory", result_line("dev_inventory", **record)])
    with pytest.raises(AssertionError, match=match):
        devices_minimal(outcome)


def test_enoent_is_the_mount_layers_only_for_what_the_host_has() -> None:
    outcome = outcome_of([])
    hidden = {"label": "read", "errno": errno.ENOENT, "path": "/etc/passwd"}
    assert layer_of(outcome, hidden) == "mountns"
    for record in (
        {"label": "read", "errno": errno.ENOENT, "path": "/nonexistent/on/the/host"},
        {"label": "read", "errno": errno.ENOENT},
    ):
        with pytest.raises(AssertionError, match="no evidence"):
            layer_of(outcome, record)


def test_eperm_is_seccomps_only_when_that_very_call_was_counted() -> None:
    refused = {"label": "setuid", "errno": errno.EPERM, "syscall": "setuid"}
    counted = outcome_of([], {"seccomp_denials": {"setuid": 1}})
    assert layer_of(counted, refused) == "seccomp"
    other_call_counted = outcome_of([], {"seccomp_denials": {"socket": 3}})
    assert layer_of(other_call_counted, refused) == "privileges"
    unnamed = {"label": "setuid", "errno": errno.EPERM}
    assert layer_of(counted, unnamed) == "privileges"
    # Counted, but no more than an idle run counts: not this call.
    baseline = outcome_of([], {"seccomp_denials": {"setuid": 1}})
    baseline.sandbox.baseline_denials = {"setuid": 1}
    assert layer_of(baseline, refused) == "privileges"


def test_a_cgroup_layer_switched_off_fails_the_layer_checks() -> None:
    switched_off = {
        "cgroup": {"active": False, "reason": "no writable hierarchy"},
        "limit_scope": {
            "wall_seconds": "run",
            "cpu_seconds": "process",
            "memory_bytes": "process",
            "processes": "user_namespace",
        },
    }
    with pytest.raises(AssertionError, match="not active"):
        assert_layers_active(switched_off, {"cgroup"})
    with pytest.raises(AssertionError):
        assert_limits_bound_the_whole_run(switched_off)
    partial = {"cgroup": {"active": True}, "limit_scope": {**switched_off["limit_scope"]}}
    with pytest.raises(AssertionError, match="bound less than the run"):
        assert_limits_bound_the_whole_run(partial)
