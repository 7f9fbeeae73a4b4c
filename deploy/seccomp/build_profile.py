"""Build deploy/seccomp/sandbox.json, the seccomp profile of the sandbox container.

The starting point is the container engines' default profile as Debian's
containers-common ships it (``/usr/share/containers/seccomp.json``, itself
derived from Docker's default). It is brought back to Docker's stricter
rules (namespace, mount and tracing calls only for a process holding the
capability that guards them) and then resolved for a container holding NO
capability: rules that a capability would enable are dropped, rules that a
capability would disable are kept unconditionally: every container runs
with no capability (compose.yaml), and should an operator grant one, the
grant never widens the syscall filter. The only widening is
:data:`JAIL_SYSCALLS`: what the sandbox's jail calls to build each run's
namespaces and mounts, from inside the run's own user namespace (the jail
runs unprivileged; see :func:`sandbox.jail.contain`).

The other containers get the same profile without the jail's calls
(``--service``): podman's own default would let them create namespaces and
mount file systems, which none of them needs.

Run (from the repository root)::

    python deploy/seccomp/build_profile.py > deploy/seccomp/sandbox.json
    python deploy/seccomp/build_profile.py --service > deploy/seccomp/service.json

An optional last argument names another source profile.
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

# Never allowed in this profile, whatever else is granted: file handles
# bypass the mount namespace (the "shocker" escape with CAP_DAC_READ_SEARCH).
ALWAYS_REFUSED: frozenset[str] = frozenset({"open_by_handle_at", "name_to_handle_at"})

# Docker's rule for clone without CAP_SYS_ADMIN: allowed unless it asks for a
# new namespace (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET);
# clone3 gets ENOSYS so that libc falls back to clone.
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38

# What the jail calls (sandbox/jail/: userns, pidns, netns, ipcns, utsns,
# mountns, and the seccomp listener hand-over). Everything the tool itself
# may call is decided by the jail's own, far smaller, filter.
JAIL_SYSCALLS: tuple[str, ...] = (
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "sethostname",
    "pidfd_getfd",
)


def docker_clone_rules() -> list[dict[str, Any]]:
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
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]


def jail_rule() -> dict[str, Any]:
    """The sandbox's only widening: namespace and mount set-up for its jail."""
    return {
        "names": list(JAIL_SYSCALLS),
        "action": "SCMP_ACT_ALLOW",
        "comment": "sandbox jail: per-run user/pid/net/mount/ipc/uts namespaces",
    }


def resolve_without_capabilities(rule: dict[str, Any]) -> dict[str, Any] | None:
    """The rule as it applies to a container holding no capability (None: dropped)."""
    includes = dict(rule.get("includes") or {})
    excludes = dict(rule.get("excludes") or {})
    if includes.pop("caps", None):
        return None
    excludes.pop("caps", None)
    resolved = {key: value for key, value in rule.items() if key not in ("includes", "excludes")}
    if includes:
        resolved["includes"] = includes
    if excludes:
        resolved["excludes"] = excludes
    return resolved


def build_profile(source: dict[str, Any], jail: bool = True) -> dict[str, Any]:
    """The sandbox profile (``jail``) or the services' one from the default ``source``."""
    removed = NOT_IN_DOCKER_DEFAULT | ALWAYS_REFUSED
    rules: list[dict[str, Any]] = []
    for original in source["syscalls"]:
        rule = resolve_without_capabilities(original)
        if rule is None:
            continue
        # The jail's calls get exactly one rule (libseccomp refuses a second
        # rule with another action for the same call).
        dropped = removed if rule["action"] == "SCMP_ACT_ALLOW" else frozenset(JAIL_SYSCALLS)
        names = [name for name in rule["names"] if name not in dropped]
        if names:
            rules.append({**rule, "names": names})
    rules.extend(docker_clone_rules())
    if jail:
        rules.append(jail_rule())
    profile = {key: value for key, value in source.items() if key != "syscalls"}
    profile["syscalls"] = rules
    return profile


def main(argv: list[str]) -> int:
    """Print the sandbox's profile, or with ``--service`` the other services' one."""
    arguments = argv[1:]
    jail = "--service" not in arguments
    paths = [argument for argument in arguments if argument != "--service"]
    source_path = Path(paths[0]) if paths else DEFAULT_SOURCE
    source = json.loads(source_path.read_text())
    json.dump(build_profile(source, jail=jail), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
