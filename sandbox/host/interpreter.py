"""The interpreter tools run with, and what of the host a jail may read."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox.jail.mountns import JAIL_OWN_PATHS, beneath

SYSTEM_READ_PATHS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
"""Always visible read-only in the jail (besides the interpreter prefix and policy paths)."""


@dataclass(frozen=True)
class Interpreter:
    """The jail's interpreter: where its stdlib lives, and its site-packages (never readable)."""

    prefix: str
    hidden_paths: tuple[str, ...]

    def read_paths(self, package_env: str | None = None) -> list[str]:
        """What every run (of a zygote of `package_env`) may read: the interpreter's prefix,
        the system paths, and the package environment."""
        base = [self.prefix, *SYSTEM_READ_PATHS]
        return base if package_env is None else [*base, os.path.realpath(package_env)]


def inspect_interpreter(python: str) -> Interpreter:
    """Ask `python` (isolated, no site) where its prefix and its site-packages are."""
    output = subprocess.run(
        [
            python,
            "-I",
            "-S",
            "-c",
            "import sys, sysconfig; print(sys.base_prefix); print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={},
        timeout=30,
    ).stdout.split("\n")
    return Interpreter(prefix=output[0], hidden_paths=(output[1],))


def package_env_mount_problem(path: str, runs_root: Path) -> str | None:
    """Why the package environment at `path` cannot be shown to a tool; None if it can.

    It is mounted read-only at its own path, so it must be an absolute,
    existing directory outside the jail's own mounts (its /tmp, /proc,
    /dev, working dir) and outside the service's run roots (`runs_root`).
    """
    real = os.path.realpath(path) if path else ""
    if not real.startswith("/") or not os.path.isdir(real):
        return f"{path!r} is not a directory"
    if beneath(real, list(JAIL_OWN_PATHS)):
        return f"{real} is under a path the jail mounts itself ({', '.join(JAIL_OWN_PATHS)})"
    if beneath(real, [str(runs_root)]) or beneath(str(runs_root), [real]):
        return f"{real} overlaps the sandbox's run roots ({runs_root})"
    return None
