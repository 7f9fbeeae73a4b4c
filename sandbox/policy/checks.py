"""Checks that span tables or need the deployment, run once the schema passed."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pagi import IDENTITIES
from sandbox.egress.addresses import non_public_kind, permitted_private
from sandbox.policy.errors import PolicyProblem, dotted_key
from sandbox.policy.lines import line_of
from sandbox.policy.network import NetworkPolicy
from sandbox.policy.schema import ALL_TOOLS, PolicyDocument
from sandbox.policy.snapshot import PolicyContext


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def semantic_problems(
    document: PolicyDocument, context: PolicyContext, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    """Checks that span tables or need the deployment: found after the schema passed."""
    problems: list[PolicyProblem] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(PolicyProblem(dotted_key(loc), line_of(lines, loc), message))

    for caller, rules in document.callers.items():
        if caller not in IDENTITIES:
            problem(
                ("callers", caller),
                f"unknown caller {caller!r} (token subjects are: {', '.join(IDENTITIES)})",
            )
        for index, ref in enumerate(rules.tools):
            if ref != ALL_TOOLS and ref not in document.tools:
                problem(("callers", caller, "tools", index), f"no tool named {ref!r} in [tools]")
    unknown_syscalls = _unknown_syscalls(
        {name for tool in document.tools.values() for name in tool.denied_syscalls}
    )
    protected = [Path(os.path.realpath(p)) for p in context.protected_paths]
    for name, tool in document.tools.items():
        if tool.package_env is not None and tool.package_env not in document.package_envs:
            problem(
                ("tools", name, "package_env"),
                f"no environment named {tool.package_env!r} in [package_envs]",
            )
        for index, syscall in enumerate(tool.denied_syscalls):
            if syscall in unknown_syscalls:
                problem(
                    ("tools", name, "denied_syscalls", index),
                    f"unknown system call {syscall!r} on this architecture",
                )
        for index, raw in enumerate(tool.readable_paths):
            loc = ("tools", name, "readable_paths", index)
            if ".." in PurePosixPath(raw).parts:
                problem(loc, f"{raw!r}: '..' is not allowed in a readable path")
                continue
            path = Path(os.path.realpath(raw))
            for secret in protected:
                if _is_within(path, secret) or _is_within(secret, path):
                    problem(loc, f"{raw!r} would expose the service's own files ({secret})")
                    break
        for key in tool.env:
            if key.startswith("LD_"):
                problem(("tools", name, "env", key), "LD_* variables are not passed to tools")
        if tool.host_network and not document.sandbox.dangerously_allow_host_network:
            problem(
                ("tools", name, "network"),
                "network = true gives the tool the host's whole network (the cloud metadata"
                " address, the LAN and PAGI's own ports included); list the hosts it needs in a"
                f" [tools.{name}.network] table instead, or set [sandbox]"
                " dangerously_allow_host_network = true to keep it",
            )
        if tool.egress is not None:
            problems.extend(_egress_problems(name, tool.egress, lines))
    return problems


def _egress_problems(
    name: str, table: NetworkPolicy, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    """An allow rule for a non-public address that allow_private does not open is dead."""
    problems = []
    egress = table.egress_policy()
    for index, rule in enumerate(egress.rules.allow):
        if rule.address is None:
            continue
        kind = non_public_kind(rule.address)
        if kind is not None and permitted_private(rule.address, egress.allow_private) is None:
            loc = ("tools", name, "network", "allow", index)
            problems.append(
                PolicyProblem(
                    dotted_key(loc),
                    line_of(lines, loc),
                    f"{rule.text!r} is a {kind} address: add it to allow_private too,"
                    " or the proxy refuses it",
                )
            )
    return problems


def _unknown_syscalls(names: set[str]) -> set[str]:
    """Names libseccomp does not know on the native architecture."""
    if not names:
        return set()
    try:
        import pyseccomp
    except (ImportError, OSError):
        # Without libseccomp there is no filter to extend; the runner refuses
        # to run when the seccomp layer is required and missing.
        return set()
    return {n for n in names if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) < 0}
