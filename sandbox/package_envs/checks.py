"""An environment's state, and the check that finds it: built, intact, importing.

:func:`inspect` is what the service runs at start, after a policy change and
whenever an environment's files change; ``pagi env build`` runs the same
interpreter probe on a new build before it is renamed into place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sandbox.package_envs.layout import (
    MARKER,
    EnvDefinition,
    build_for,
    builds,
)

PROBE_TIMEOUT_SECONDS = 180.0
"""Generous: the first import of matplotlib builds its font cache."""

EnvStatus = Literal["ready", "missing", "broken", "checking"]

_PROBE_PREFIX = "PAGI-ENV-PROBE "
_PROBE = f"""
import importlib, json, sys
failed = {{}}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as error:
        failed[name] = (type(error).__name__ + ": " + str(error))[:300]
from importlib import metadata
packages = {{d.metadata["Name"]: d.version for d in metadata.distributions()}}
print({_PROBE_PREFIX!r} + json.dumps({{
    "prefix": sys.prefix, "base_prefix": sys.base_prefix, "path": sys.path,
    "failed": failed, "packages": packages,
}}))
"""


@dataclass(frozen=True)
class EnvState:
    """What the service knows of one environment now."""

    name: str
    status: EnvStatus
    reason: str | None = None
    """Why it is not ready (and what to do)."""
    path: str | None = None
    """The environment's directory: what the jail mounts, read-only, at the same path."""
    python: str | None = None
    """Its interpreter (``bin/python``): run it by this name, never resolved (a link)."""
    key: str | None = None
    preload: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    packages: dict[str, str] = field(default_factory=dict)
    checked_at: str = ""

    @property
    def ready(self) -> bool:
        """Whether tools may run with it."""
        return self.status == "ready"

    def health(self) -> dict[str, Any]:
        """The ``/health`` view (no package list: ``pagi env status`` shows it)."""
        return {
            "state": self.status,
            "reason": self.reason,
            "path": self.path,
            "tools": list(self.tools),
            "preload": list(self.preload),
            "packages": len(self.packages),
            "checked_at": self.checked_at,
        }


def now() -> str:
    """The time, as environment states and build markers record it."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_state(
    definition: EnvDefinition, status: EnvStatus, reason: str | None, **more: Any
) -> EnvState:
    return EnvState(
        name=definition.name,
        status=status,
        reason=reason,
        preload=definition.preload,
        tools=definition.tools,
        checked_at=now(),
        **more,
    )


def _beneath(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def run_probe(root: Path, preload: tuple[str, ...]) -> dict[str, Any]:
    """Import ``preload`` with the environment's interpreter; what it reports of itself."""
    python = root / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="pagi-env-probe-") as home:
        try:
            done = subprocess.run(
                [str(python), "-I", "-c", _PROBE, *preload],
                capture_output=True,
                text=True,
                cwd=home,
                env={"HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"},
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            seconds = f"{PROBE_TIMEOUT_SECONDS:.0f} s"
            raise OSError(f"importing {', '.join(preload)} took over {seconds}") from None
        except OSError as error:
            raise OSError(f"its interpreter does not run: {error.strerror or error}") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(_PROBE_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise OSError(f"its interpreter failed (exit {done.returncode}): {tail}")
    report: dict[str, Any] = json.loads(lines[-1][len(_PROBE_PREFIX) :])
    return report


def check_probe(root: Path, report: dict[str, Any]) -> None:
    """``OSError`` unless the interpreter imported everything and sees only what it should."""
    if report["failed"]:
        name, error = next(iter(report["failed"].items()))
        raise OSError(f"cannot import {name}: {error}")
    top = os.path.realpath(root)
    if os.path.realpath(report["prefix"]) != top:
        raise OSError(f"its interpreter runs as {report['prefix']}, not as the environment")
    base = os.path.realpath(report["base_prefix"])
    service = os.path.realpath(sys.prefix)
    for entry in report["path"]:
        real = os.path.realpath(entry)
        if _beneath(real, top):
            continue
        foreign = not _beneath(real, base) or {"site-packages", "dist-packages"} & set(
            Path(real).parts
        )
        if foreign or (service != base and _beneath(real, service)):
            raise OSError(f"its interpreter sees packages from outside it: {entry}")


def inspect(definition: EnvDefinition, envs_dir: Path, python: str, probe: bool = True) -> EnvState:
    """The state of one environment; with ``probe``, its interpreter is run (a second or two)."""
    try:
        wanted = build_for(definition, envs_dir, python)
    except OSError as error:
        return new_state(definition, "broken", str(error))
    key, root, base = wanted.key, wanted.root, wanted.python
    build_hint = f"run `pagi env build {definition.name}`"
    if not root.is_dir():
        older = sorted(p.name for p in builds(envs_dir, definition.name))
        why = (
            "not built"
            if not older
            else f"not built for {definition.requirements.name} as it is now"
        )
        return new_state(definition, "missing", f"{why}: {build_hint}", key=key)
    found = {"path": str(root), "key": key}
    try:
        marker = json.loads((root / MARKER).read_text())
        if marker.get("key") != key or marker.get("name") != definition.name:
            raise ValueError("marker of another build")
    except (OSError, ValueError):
        reason = f"an incomplete build: {build_hint} --force"
        return new_state(definition, "broken", reason, **found)
    python_link = root / "bin" / "python"
    if os.path.realpath(python_link) != base.path:
        reason = f"its interpreter is not {base.path}: {build_hint} --force"
        return new_state(definition, "broken", reason, **found)
    packages = dict(marker.get("packages") or {})
    if probe:
        try:
            report = run_probe(root, definition.preload)
            check_probe(root, report)
        except OSError as error:
            return new_state(definition, "broken", f"{error}: {build_hint} --force", **found)
        packages = report["packages"]
    return new_state(definition, "ready", None, python=str(python_link), packages=packages, **found)
