"""Build deploy/seccomp/sandbox.json, the seccomp profile of the sandbox container.

The profile is the container engines' default profile, as Debian's
containers-common ships it (``/usr/share/containers/seccomp.json``, itself
derived from Docker's default), brought back to Docker's stricter rules
(namespace, mount and tracing calls only with the capability that guards
them), plus the few calls the sandbox's jail makes to build each run's
namespaces. The sandbox container runs with ``cap_drop: [ALL]``, so every
capability-guarded rule stays closed and the extra rule below is the only
widening.

Run: ``python deploy/seccomp/build_profile.py [SOURCE] > deploy/seccomp/sandbox.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_SOURCE = Path("/usr/share/containers/seccomp.json")

# Calls containers-common allows to everyone that Docker's default allows only
# with a capability (CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_BOOT, CAP_SYS_NICE,
# CAP_SYSLOG) or not at all, and legacy 32-bit calls Docker does not list.
NOT_IN_DOCKER_DEFAULT: frozenset[str] = frozenset(
    {
        "clone",
        "clone3",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "get_mempolicy",
        "keyctl",
        "mbind",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "pidfd_getfd",
        "pivot_root",
        "reboot",
        "set_mempolicy",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
        "readdir",
        "signal",
        "sigaction",
        "sigpending",
        "sigsuspend",
        "syscall",
        "timerfd",
    }
)

# How Docker's default lets a process holding a capability make these calls
# (the sandbox holds none; kept so the profile stays Docker's default).
CAPABILITY_GUARDED: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "clone",
        "clone3",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "CAP_SYS_PTRACE": ("pidfd_getfd",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy"),
    "CAP_SYSLOG": ("syslog",),
}

# Docker's rule for clone without CAP_SYS_ADMIN: allowed unless it asks for a
# new namespace (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET);
# clone3 gets ENOSYS so that libc falls back to clone.
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38

# What the jail calls to build a run's namespaces and mounts. Everything the
# tool itself may call is decided by the jail's own, far smaller, filter.
JAIL_SYSCALLS: tuple[str, ...] = ("unshare", "mount", "umount2", "pivot_root")


def docker_rules() -> list[dict[str, Any]]:
    """Docker's clone/clone3 rules for a process without CAP_SYS_ADMIN."""
    return [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {
                    "index": 0,
                    "value": CLONE_NAMESPACE_FLAGS,
                    "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        *(
            {"names": list(names), "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}
            for cap, names in CAPABILITY_GUARDED.items()
        ),
    ]


def jail_rule() -> dict[str, Any]:
    """The sandbox's only widening: namespace and mount set-up for its jail."""
    return {
        "names": list(JAIL_SYSCALLS),
        "action": "SCMP_ACT_ALLOW",
        "comment": "sandbox jail: per-run user/pid/net/mount/ipc/uts namespaces",
    }


def build_profile(source: dict[str, Any]) -> dict[str, Any]:
    """The sandbox profile from the engines' default profile ``source``."""
    rules: list[dict[str, Any]] = []
    for rule in source["syscalls"]:
        guarded = bool(rule.get("includes") or rule.get("excludes") or rule.get("args"))
        if rule["action"] == "SCMP_ACT_ALLOW" and not guarded:
            names = [name for name in rule["names"] if name not in NOT_IN_DOCKER_DEFAULT]
            rules.append({**rule, "names": names})
        else:
            rules.append(rule)
    rules.extend(docker_rules())
    rules.append(jail_rule())
    profile = {key: value for key, value in source.items() if key != "syscalls"}
    profile["syscalls"] = rules
    return profile


def main(argv: list[str]) -> int:
    """Print the profile built from ``argv[1]`` (default: the installed default)."""
    source_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    source = json.loads(source_path.read_text())
    json.dump(build_profile(source), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
