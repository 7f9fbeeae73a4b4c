"""Readiness of a sandbox pod: every isolation layer a run needs is in force.

The kubelet runs ``python -I /etc/pagi/probes/ready.py`` in the sandbox
container. It reads ``GET /health`` (the isolation report the sandbox probed
at start) and the policy file, and exits 0 only when every layer the policy
requires, and every layer the jail cannot be built without, is active and
the audit file is writable. Otherwise it prints what is missing (shown in
the pod's events) and exits 1: the pod takes no traffic, and a rollout onto
nodes that lack a layer stops there instead of answering every run with 503.

Standard library only, and no import of PAGI's own code: the probe runs every
few seconds and must cost little.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.request
from typing import Any

STRUCTURAL_LAYERS = frozenset({"userns", "pidns", "mountns", "no_new_privs", "privileges"})
"""Layers the jail is built from: nothing runs without them, whatever the policy says."""
NOT_REQUIRED_BY_DEFAULT = frozenset({"cgroup"})
"""A policy that names no ``required_layers`` requires every layer but these."""


def required_layers(policy: dict[str, Any] | None, reported: set[str]) -> set[str]:
    """The layers a run needs under ``policy``, given the layers /health reports.

    ``policy`` is None when the file cannot be read as TOML: the sandbox then
    keeps its last good version (GET /health says the edit was refused), so a
    bad edit must not take every pod out of service; only the layers the jail
    cannot do without are judged until the file is fixed.
    """
    if policy is None:
        return set(STRUCTURAL_LAYERS)
    table = policy.get("sandbox")
    named = table.get("required_layers") if isinstance(table, dict) else None
    if named is None:
        return (reported - NOT_REQUIRED_BY_DEFAULT) | STRUCTURAL_LAYERS
    if not isinstance(named, list) or not all(isinstance(name, str) for name in named):
        return set(STRUCTURAL_LAYERS)  # refused by the sandbox too: last good version kept
    return set(named) | STRUCTURAL_LAYERS


def read_policy(path: str) -> dict[str, Any] | None:
    """The policy file as TOML, or None when it cannot be read or parsed."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, ValueError):
        return None


def problems(health: dict[str, Any], policy: dict[str, Any] | None) -> list[str]:
    """Why this sandbox cannot run tools now; empty when it can."""
    isolation = health.get("isolation") or {}
    layers = {
        name: state
        for name, state in isolation.items()
        if isinstance(state, dict) and "active" in state
    }
    found = []
    for name in sorted(required_layers(policy, set(layers))):
        state = layers.get(name)
        if state is None:
            found.append(f"layer {name}: not reported")
        elif not state["active"]:
            found.append(f"layer {name}: {state.get('reason', 'inactive')}")
    if not (health.get("audit") or {}).get("writable", False):
        found.append("audit file not writable")
    return found


def main() -> int:
    """Exit status for the kubelet: 0 ready, 1 not ready (reason on stdout)."""
    port = os.environ.get("RUST_SANDBOX_PORT", "8001")
    policy_path = os.environ.get("PAGI_SANDBOX_POLICY", "/etc/pagi/policies/sandbox.toml")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            health = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"not ready: GET /health: {exc}")
        return 1
    if not isinstance(health, dict):
        print("not ready: GET /health did not answer a JSON object")
        return 1
    found = problems(health, read_policy(policy_path))
    if found:
        print("not ready: " + "; ".join(found))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
