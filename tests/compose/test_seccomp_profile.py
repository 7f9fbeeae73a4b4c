"""The sandbox container's seccomp profile: Docker's default plus the jail's calls only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "deploy" / "seccomp" / "sandbox.json"
SERVICE_PROFILE = REPO / "deploy" / "seccomp" / "service.json"
BUILDER = REPO / "deploy" / "seccomp" / "build_profile.py"
INSTALLED_DEFAULT = Path("/usr/share/containers/seccomp.json")

# Calls a process without capabilities must never get from this profile.
NEVER_UNGUARDED = {
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "setns", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "open_by_handle_at", "fsopen", "fsmount", "open_tree", "move_mount", "syslog",
    "swapon", "swapoff", "acct", "iopl", "ioperm", "clock_settime", "settimeofday",
}  # fmt: skip


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_profile", BUILDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unguarded_allowed(profile: dict[str, Any]) -> set[str]:
    """Calls allowed whatever the capabilities and arguments."""
    allowed: set[str] = set()
    for rule in profile["syscalls"]:
        if rule["action"] != "SCMP_ACT_ALLOW" or rule.get("args"):
            continue
        includes = rule.get("includes") or {}
        if includes.get("caps"):
            continue
        if includes.get("arches") and "amd64" not in includes["arches"]:
            continue
        allowed.update(rule["names"])
    return allowed


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return json.loads(PROFILE.read_text())


@pytest.fixture(scope="module")
def service_profile() -> dict[str, Any]:
    return json.loads(SERVICE_PROFILE.read_text())


def test_profile_denies_by_default(profile: dict) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    arches = {entry["architecture"] for entry in profile["archMap"]}
    assert "SCMP_ARCH_X86_64" in arches


def test_jail_calls_are_allowed(profile: dict) -> None:
    allowed = unguarded_allowed(profile)
    builder = load_builder()
    assert set(builder.JAIL_SYSCALLS) <= allowed
    assert "unshare" in allowed and "mount" in allowed


def test_dangerous_calls_stay_closed(profile: dict) -> None:
    assert not (unguarded_allowed(profile) & NEVER_UNGUARDED)


def test_clone_may_not_create_namespaces_and_clone3_is_enosys(profile: dict) -> None:
    assert "clone" not in unguarded_allowed(profile)
    clone_rules = [r for r in profile["syscalls"] if r["names"] == ["clone"]]
    (masked,) = clone_rules
    assert masked["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET must all be zero.
    assert masked["args"][0]["value"] == 0x7E020000
    (clone3,) = [r for r in profile["syscalls"] if r["names"] == ["clone3"]]
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38


def test_builder_narrows_a_permissive_source() -> None:
    builder = load_builder()
    source = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "write", "keyctl", "setns", "mount"], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    built = builder.build_profile(source)
    allowed = unguarded_allowed(built)
    assert {"read", "write"} <= allowed
    assert "keyctl" not in allowed and "setns" not in allowed
    assert set(builder.JAIL_SYSCALLS) <= allowed


@pytest.mark.skipif(
    not INSTALLED_DEFAULT.exists(),
    reason="containers-common's default profile is installed by scripts/podman-setup.sh",
)
def test_committed_profiles_are_what_the_builder_makes(
    profile: dict, service_profile: dict
) -> None:
    builder = load_builder()
    source = json.loads(INSTALLED_DEFAULT.read_text())
    assert builder.build_profile(source) == profile
    assert builder.build_profile(source, jail=False) == service_profile


def test_service_profile_is_the_sandbox_profile_without_the_jail_calls(
    profile: dict, service_profile: dict
) -> None:
    builder = load_builder()
    jail_calls = set(builder.JAIL_SYSCALLS)
    assert not (unguarded_allowed(service_profile) & jail_calls)
    assert unguarded_allowed(profile) - unguarded_allowed(service_profile) == jail_calls
    assert not (unguarded_allowed(service_profile) & NEVER_UNGUARDED)


def test_granted_capabilities_do_not_widen_the_filter(profile: dict) -> None:
    # Engines add a rule to the filter when the container holds the capability
    # it names: an operator who grants one must not widen it, so it names none.
    for rule in profile["syscalls"]:
        assert "caps" not in (rule.get("includes") or {}), rule["names"]
        assert "caps" not in (rule.get("excludes") or {}), rule["names"]


def test_file_handles_are_never_allowed(profile: dict) -> None:
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            assert "open_by_handle_at" not in rule["names"]
            assert "name_to_handle_at" not in rule["names"]


def test_each_jail_call_has_exactly_one_rule(profile: dict) -> None:
    builder = load_builder()
    for name in builder.JAIL_SYSCALLS:
        rules = [r for r in profile["syscalls"] if name in r["names"]]
        assert len(rules) == 1, (name, rules)
