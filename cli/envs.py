"""``pagi env build`` and ``pagi env status``: the sandbox's package environments."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sandbox.package_envs import EnvBuildError, EnvDefinition, build, definitions, inspect
from sandbox.policy import PolicyError, deployment_context, load_policy
from sandbox.settings import SandboxSettings


def _command_context(
    policy: Path | None, names: list[str]
) -> tuple[list[EnvDefinition], Path, str] | int:
    """The environments ``names`` (all when empty) of the policy in use, or an exit code."""
    settings = SandboxSettings()
    path = policy or settings.pagi_sandbox_policy
    try:
        snapshot = load_policy(path, deployment_context(settings))
    except PolicyError as error:
        print(error.render(), file=sys.stderr)
        return 2
    known = definitions(snapshot)
    unknown = [name for name in names if name not in known]
    if unknown:
        listed = ", ".join(known) or "none"
        print(
            f"pagi env: no package environment {', '.join(map(repr, unknown))} in {path}"
            f" (it has: {listed})",
            file=sys.stderr,
        )
        return 2
    chosen = [known[name] for name in names] if names else list(known.values())
    return chosen, settings.envs_dir, settings.pagi_sandbox_python


def build_command(names: list[str], force: bool, policy: Path | None = None) -> int:
    """``pagi env build [NAME...]``: build what is missing (everything with ``force``)."""
    context = _command_context(policy, names)
    if isinstance(context, int):
        return context
    chosen, envs_dir, python = context
    failed = 0
    for definition in chosen:
        if not force:
            state = inspect(definition, envs_dir, python, probe=False)
            if state.ready:
                print(f"{definition.name}: ready at {state.path}")
                continue
        print(
            f"{definition.name}: building from {definition.requirements}"
            f" for {os.path.realpath(python)} (downloads the locked wheels)",
            flush=True,
        )
        try:
            build(definition, envs_dir, python, force=force)
        except EnvBuildError as error:
            print(f"{definition.name}: build failed: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def status_command(names: list[str], as_json: bool, policy: Path | None = None) -> int:
    """``pagi env status [NAME...]``: check each environment as the service does; 0 if all ready."""
    context = _command_context(policy, names)
    if isinstance(context, int):
        return context
    chosen, envs_dir, python = context
    states = [inspect(definition, envs_dir, python) for definition in chosen]
    if as_json:
        report = {
            s.name: {**s.health(), "python": s.python, "packages": s.packages} for s in states
        }
        print(json.dumps(report, indent=2))
    else:
        for state in states:
            where = state.path or "-"
            tools = ", ".join(state.tools) or "(no tool)"
            print(f"{state.name:<12} {state.status:<8} {where}  tools: {tools}")
            if state.reason:
                print(f"{'':<12} {state.reason}")
            elif state.packages:
                pins = ", ".join(f"{k}=={v}" for k, v in sorted(state.packages.items()))
                print(f"{'':<12} {pins}")
    return 0 if all(state.ready for state in states) else 1
